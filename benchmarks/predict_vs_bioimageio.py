"""emzoo predict against bioimageio predict and a plain onnxruntime loop (CPU, whole processes).

Usage: python benchmarks/predict_vs_bioimageio.py [--model zoo_models/em-membrane-unet2d] [--runs 3]

1. One 4096x4096 uint8 EM image (64 real ISBI 2012 ssTEM slices side by side when ../shared/data is
   there, else smooth synthetic texture): ``emzoo predict`` (default settings) vs ``bioimageio predict
   --weight-format onnx --blockwise N`` (N chosen so that blocks are 512 px, bioimageio's best setting
   here) vs the plain onnxruntime loop in ``plain_onnxruntime_loop.py`` (512 px blocks, 32 px halo).
2. Ten 1024x1024 images: ``emzoo predict FOLDER`` vs ``bioimageio predict`` given the same 10 files in
   one call.

Every command runs as its own process, once to warm caches and then ``--runs`` times; the script
prints the median wall time, the peak RSS, and the ratios that emzoo's goals are stated in.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "isbi2012_membranes"
GOALS = {
    "emzoo / bioimageio (4096^2)": 0.8,
    "emzoo / plain onnxruntime (4096^2)": 1.1,
    "emzoo / bioimageio (10 x 1024^2)": 0.9,
}
RSS_GOAL_GB = 0.6


def em_like(size: int, seed: int = 0) -> np.ndarray:
    """Real ssTEM slices tiled to ``size`` (or smooth noise when the real data is absent)."""
    slices = sorted((SHARED / "train" / "image").glob("*.png")) + sorted((SHARED / "unlabeled").glob("*.png"))
    if slices:
        from PIL import Image

        tiles = [np.asarray(Image.open(p)) for p in slices]
        rng = np.random.default_rng(seed)
        rows = []
        for _ in range(size // 512):
            rows.append(np.concatenate([tiles[i] for i in rng.integers(0, len(tiles), size // 512)], axis=1))
        return np.concatenate(rows, axis=0)
    from scipy import ndimage

    noise = np.random.default_rng(seed).normal(size=(size, size))
    smooth = ndimage.gaussian_filter(noise, 3)
    return np.clip(128 + 40 * smooth / smooth.std(), 0, 255).astype(np.uint8)


def measure(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err[-2000:]}")
    return seconds, usage.ru_maxrss / 1024**2


def bench(name: str, cmd: list[str], cwd: Path, runs: int, clean: list[Path]) -> dict:
    results = []
    for i in range(runs + 1):  # the first run warms caches (file system, emzoo's description cache)
        for path in clean:
            shutil.rmtree(path, ignore_errors=True)
        seconds, rss = measure(cmd, cwd)
        print(f"  {name:<28} run {i}: {seconds:6.2f} s  {rss:5.2f} GB{'  (warm-up)' if i == 0 else ''}")
        if i:
            results.append((seconds, rss))
    return {
        "name": name,
        "median_s": statistics.median(r[0] for r in results),
        "peak_rss_gb": max(r[1] for r in results),
        "first_s": results[0][0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(REPO / "zoo_models" / "em-membrane-unet2d"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default=str(REPO / "benchmarks" / "_work"))
    args = ap.parse_args()

    sys.path.insert(0, str(REPO))
    from emzoo.package.load import open_model

    pkg = open_model(args.model)
    spec = pkg.spec
    axis = spec.inputs[0].spatial_axes[0]
    blockwise = max(0, (512 - (axis.min or 0)) // (axis.step or 1))
    onnx = pkg.file(spec.weights["onnx"].source)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    big = work / "em_4096.tif"
    if not big.exists():
        tifffile.imwrite(big, em_like(4096))
    folder = work / "folder10"
    if not folder.exists():
        folder.mkdir()
        for i in range(10):
            tifffile.imwrite(folder / f"img_{i:02d}.tif", em_like(1024, seed=i + 1))
    files = sorted(str(p) for p in folder.glob("*.tif"))
    emzoo = [sys.executable, "-m", "emzoo"]
    bio = [str(Path(sys.executable).with_name("bioimageio"))]
    rdf = str(pkg.rdf)
    print(
        f"model: {spec.name} ({args.model}); bioimageio --blockwise {blockwise} "
        f"= {(axis.min or 0) + blockwise * (axis.step or 1)} px blocks; {os.cpu_count()} CPUs"
    )

    print("4096 x 4096 uint8 image:")
    rows = [
        bench(
            "emzoo predict",
            [*emzoo, "predict", args.model, str(big), "-o", str(work / "out_emzoo"), "-q"],
            work,
            args.runs,
            [work / "out_emzoo"],
        ),
        bench(
            "bioimageio predict",
            [
                *bio,
                "predict",
                rdf,
                "--inputs",
                str(big),
                "--outputs",
                str(work / "out_bio" / "{output_id}.tif"),
                "--weight-format",
                "onnx",
                "--blockwise",
                str(blockwise),
                "--overwrite",
            ],
            work,
            args.runs,
            [work / "out_bio"],
        ),
        bench(
            "plain onnxruntime loop",
            [
                sys.executable,
                str(REPO / "benchmarks" / "plain_onnxruntime_loop.py"),
                str(onnx),
                str(big),
                str(work / "out_plain.tif"),
            ],
            work,
            args.runs,
            [],
        ),
    ]
    print("10 images of 1024 x 1024:")
    rows += [
        bench(
            "emzoo predict (folder)",
            [*emzoo, "predict", args.model, str(folder), "-o", str(work / "out10_emzoo"), "-q"],
            work,
            args.runs,
            [work / "out10_emzoo"],
        ),
        bench(
            "bioimageio predict (10)",
            [
                *bio,
                "predict",
                rdf,
                "--inputs",
                json.dumps(files),
                "--outputs",
                str(work / "out10_bio" / "{sample_id}.tif"),
                "--weight-format",
                "onnx",
                "--overwrite",
            ],
            work,
            args.runs,
            [work / "out10_bio"],
        ),
    ]
    by = {r["name"]: r for r in rows}
    ratios = {
        "emzoo / bioimageio (4096^2)": by["emzoo predict"]["median_s"] / by["bioimageio predict"]["median_s"],
        "emzoo / plain onnxruntime (4096^2)": by["emzoo predict"]["median_s"]
        / by["plain onnxruntime loop"]["median_s"],
        "emzoo / bioimageio (10 x 1024^2)": by["emzoo predict (folder)"]["median_s"]
        / by["bioimageio predict (10)"]["median_s"],
    }
    print(f"\n{'command':<28} {'median s':>9} {'peak RSS GB':>12}")
    for r in rows:
        print(f"{r['name']:<28} {r['median_s']:9.2f} {r['peak_rss_gb']:12.2f}")
    print()
    for name, value in ratios.items():
        goal = GOALS[name]
        print(f"{name:<36} {value:5.2f}  (goal <= {goal}: {'met' if value <= goal else 'NOT met'})")
    rss = by["emzoo predict"]["peak_rss_gb"]
    verdict = "met" if rss < RSS_GOAL_GB else "NOT met"
    print(f"{'emzoo peak RSS (4096^2)':<36} {rss:5.2f} GB (goal < {RSS_GOAL_GB} GB: {verdict})")


if __name__ == "__main__":
    main()
