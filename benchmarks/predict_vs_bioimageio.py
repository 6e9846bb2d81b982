"""emzoo predict against bioimageio predict and a plain onnxruntime loop (CPU, whole processes).

Usage: python benchmarks/predict_vs_bioimageio.py [--model zoo_models/em-membrane-unet2d] [--runs 3]

1. One 4096x4096 uint8 EM image (64 real ISBI 2012 ssTEM slices side by side when ../shared/data is
   there, else smooth synthetic texture): ``emzoo predict`` (default settings) vs ``bioimageio predict
   --weight-format onnx --blockwise N`` (N chosen so that blocks are 512 px, bioimageio's best setting
   here) vs the plain onnxruntime loop in ``plain_onnxruntime_loop.py`` with the block and halo emzoo
   plans for this image (so that both do the same network work).
2. Ten 1024x1024 images: ``emzoo predict FOLDER`` vs the plain loop over the same files (read,
   normalise, run, write each) and vs ``bioimageio predict`` given the same 10 files in one call.

Every command runs as its own process; the commands alternate (one run of each, then the next round),
so that a machine that gets busier slows them alike. The first round warms caches and is not
counted. The script prints the median wall time, the peak RSS, and the ratios emzoo's goals are
stated in.
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
    "emzoo / plain onnxruntime, same block and halo (4096^2)": 1.0,
    "emzoo / bioimageio (4096^2)": 0.7,
    "emzoo / plain onnxruntime (10 x 1024^2)": 1.1,
    "emzoo / bioimageio (10 x 1024^2)": 0.9,
}
RSS_GOAL_GB = 0.5


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


def bench(commands: dict[str, tuple[list[str], list[Path]]], cwd: Path, runs: int) -> list[dict]:
    """Each command ``runs + 1`` times, alternating (a warm-up round first, not counted)."""
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for i in range(runs + 1):
        for name, (cmd, clean) in commands.items():
            for path in clean:
                shutil.rmtree(path, ignore_errors=True)
            seconds, rss = measure(cmd, cwd)
            print(f"  {name:<28} run {i}: {seconds:6.2f} s  {rss:5.2f} GB{'  (warm-up)' if i == 0 else ''}")
            if i:
                results[name].append((seconds, rss))
    return [
        {
            "name": name,
            "median_s": statistics.median(r[0] for r in rows),
            "peak_rss_gb": max(r[1] for r in rows),
        }
        for name, rows in results.items()
    ]


def emzoo_blocks(model: str, size: int) -> tuple[int, int]:
    """The block edge and halo (px) emzoo plans for a ``size`` x ``size`` image of ``model``."""
    from emzoo.runtime.predictor import Predictor

    predictor = Predictor(model, device="cpu")
    tensor = predictor.spec.inputs[0]
    shape = tuple(1 if a.type in ("batch", "channel") else size for a in tensor.axes)
    plan = predictor.plan({tensor.id: np.zeros(shape, np.float32)})
    if plan is None:
        raise SystemExit(f"{model}: emzoo does not tile this model")
    last = plan.axes[-1]
    return last.block, last.halo


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
    onnx = str(pkg.file(spec.weights["onnx"].source))
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
    block, halo = emzoo_blocks(args.model, 4096)
    block10, halo10 = emzoo_blocks(args.model, 1024)
    emzoo = [sys.executable, "-m", "emzoo"]
    bio = [str(Path(sys.executable).with_name("bioimageio"))]
    plain = [sys.executable, str(REPO / "benchmarks" / "plain_onnxruntime_loop.py"), onnx]
    rdf = str(pkg.rdf)
    print(
        f"model: {spec.name} ({args.model}); emzoo plans {block} px blocks with a {halo} px halo at "
        f"4096^2 ({block10}/{halo10} at 1024^2), the plain loop uses the same; bioimageio --blockwise "
        f"{blockwise} = {(axis.min or 0) + blockwise * (axis.step or 1)} px blocks; {os.cpu_count()} CPUs"
    )
    bio_big = [
        *bio, "predict", rdf, "--inputs", str(big), "--outputs", str(work / "out_bio" / "{output_id}.tif"),
        "--weight-format", "onnx", "--blockwise", str(blockwise), "--overwrite",
    ]  # fmt: skip
    bio_folder = [
        *bio, "predict", rdf, "--inputs", json.dumps(files), "--outputs",
        str(work / "out10_bio" / "{sample_id}.tif"), "--weight-format", "onnx", "--overwrite",
    ]  # fmt: skip
    print("4096 x 4096 uint8 image:")
    rows = bench(
        {
            "emzoo predict": (
                [*emzoo, "predict", args.model, str(big), "-o", str(work / "out_emzoo"), "-q"],
                [work / "out_emzoo"],
            ),
            "bioimageio predict": (bio_big, [work / "out_bio"]),
            "plain onnxruntime loop": (
                [*plain, str(big), str(work / "out_plain.tif"), "--block", str(block), "--halo", str(halo)],
                [],
            ),
        },
        work,
        args.runs,
    )
    blocks10 = ["--block", str(block10), "--halo", str(halo10)]
    print("10 images of 1024 x 1024:")
    rows += bench(
        {
            "emzoo predict (folder)": (
                [*emzoo, "predict", args.model, str(folder), "-o", str(work / "out10_emzoo"), "-q"],
                [work / "out10_emzoo"],
            ),
            "plain onnxruntime loop (10)": (
                [*plain, str(folder), str(work / "out10_plain"), *blocks10],
                [work / "out10_plain"],
            ),
            "bioimageio predict (10)": (bio_folder, [work / "out10_bio"]),
        },
        work,
        args.runs,
    )
    by = {r["name"]: r["median_s"] for r in rows}
    ratios = {
        "emzoo / plain onnxruntime, same block and halo (4096^2)": by["emzoo predict"]
        / by["plain onnxruntime loop"],
        "emzoo / bioimageio (4096^2)": by["emzoo predict"] / by["bioimageio predict"],
        "emzoo / plain onnxruntime (10 x 1024^2)": by["emzoo predict (folder)"]
        / by["plain onnxruntime loop (10)"],
        "emzoo / bioimageio (10 x 1024^2)": by["emzoo predict (folder)"] / by["bioimageio predict (10)"],
    }
    print(f"\n{'command':<28} {'median s':>9} {'peak RSS GB':>12}")
    for r in rows:
        print(f"{r['name']:<28} {r['median_s']:9.2f} {r['peak_rss_gb']:12.2f}")
    print()
    for name, value in ratios.items():
        goal = GOALS[name]
        print(f"{name:<56} {value:5.2f}  (goal <= {goal}: {'met' if value <= goal else 'NOT met'})")
    rss = next(r["peak_rss_gb"] for r in rows if r["name"] == "emzoo predict")
    verdict = "met" if rss <= RSS_GOAL_GB else "NOT met"
    print(f"{'emzoo peak RSS (4096^2)':<56} {rss:5.2f} GB (goal <= {RSS_GOAL_GB} GB: {verdict})")


if __name__ == "__main__":
    main()
