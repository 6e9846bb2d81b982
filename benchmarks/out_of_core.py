"""Out-of-core prediction: peak memory and time per pixel of ``emzoo predict`` on large Zarr inputs.

Cases (each one ``emzoo predict`` process; peak RSS of the whole process from ``os.wait4``):

* ``in-memory 4096²``: a 4096x4096 uint8 TIFF predicted in memory (``--no-stream``), the reference;
* ``zarr 4096²``: the same size as an OME-Zarr, streamed (peak memory must not grow with the size);
* ``zarr 16384²``: a 16384x16384 uint8 OME-Zarr (256 Mpx) streamed chunk by chunk into OME-Zarr;
* ``zarr volume``: a Zx2048x2048 uint8 OME-Zarr volume, the 2D model slice by slice (``--slices``);
  ``--volume-z`` slices are run (default 16) and the time of the full 512-slice volume is extrapolated.

Per-pixel times subtract the fixed start-up cost (imports, model load, receptive-field probe), measured
on a 64x64 image. The goal: streaming within 1.2x of the in-memory time per pixel, and a peak RSS of
``emzoo predict`` on the 16384² Zarr below 1.5 GB (independent of the image size).

Usage::

    python benchmarks/out_of_core.py [--model PKG] [--work DIR] [--size 16384] [--volume-z 16]

Without ``--model`` a small U-Net package (depth 2, 4 features, random weights) is built with
``emzoo.packaging``: a cheap network, so overheads (reading, writing, statistics) weigh the most.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def build_model(folder: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from tests.runtime.conftest import tiny_package

    return tiny_package(folder, 2)


def synthetic_tile(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.gamma(2.0, 30.0, shape).clip(0, 255).astype(np.uint8)


def write_zarr(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...]) -> Path:
    """An OME-Zarr of ``shape`` filled chunk by chunk (never whole in memory)."""
    from emzoo.io import ImageMeta
    from emzoo.io.formats.zarr_store import create_ome_zarr, finalize_ome_zarr

    if path.exists():
        return path
    axes = "yx" if len(shape) == 2 else "zyx"
    meta = ImageMeta(axes, dict.fromkeys(axes, 4.0), "nanometer")
    array = create_ome_zarr(path, shape, "uint8", meta, chunks)
    for i, corner in enumerate(np.ndindex(*[-(-n // c) for n, c in zip(shape, chunks, strict=True)])):
        region = tuple(
            slice(k * c, min((k + 1) * c, n)) for k, c, n in zip(corner, chunks, shape, strict=True)
        )
        array[region] = synthetic_tile(tuple(r.stop - r.start for r in region), i)
    finalize_ome_zarr(path)
    return path


def run_predict(args: list[str]) -> tuple[float, float]:
    """``(seconds, peak RSS in MB)`` of one ``emzoo predict`` process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "emzoo", "predict", *args, "-q"], cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"emzoo predict {' '.join(args)} failed with exit code {code}")
    return seconds, usage.ru_maxrss / 1024  # Linux: kilobytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="a 2D model package (default: a small U-Net, built here)")
    ap.add_argument("--work", type=Path, help="folder for data and outputs (default: a temporary one)")
    ap.add_argument("--size", type=int, default=16384, help="edge of the large 2D image")
    ap.add_argument("--reference", type=int, default=4096, help="edge of the in-memory reference")
    ap.add_argument("--volume-z", type=int, default=16, help="slices of the Zx2048x2048 volume (0: skip)")
    ap.add_argument("--volume-xy", type=int, default=2048)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="emzoo-ooc-"))
    work.mkdir(parents=True, exist_ok=True)
    model = args.model or build_model(work / "model")
    env_note = f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    print(f"model: {model}\nwork: {work}\nmachine: {env_note}", flush=True)

    import tifffile

    tifffile.imwrite(work / "tiny.tif", synthetic_tile((64, 64), 0))
    common = ["--overwrite"]
    startup, startup_rss = run_predict([str(model), str(work / "tiny.tif"), "-o", str(work / "o0"), *common])
    print(f"start-up (64x64 image): {startup:.1f} s, {startup_rss:.0f} MB", flush=True)

    rows = []
    n = args.reference
    tifffile.imwrite(work / "ref.tif", synthetic_tile((n, n), 1))
    s, rss = run_predict(
        [str(model), str(work / "ref.tif"), "--no-stream", "-o", str(work / "o1"), "--overwrite"]
    )
    rows.append(("in-memory", f"{n}x{n} tiff", n * n, s, rss, None))

    small = write_zarr(work / f"small{n}.ome.zarr", (n, n), (1024, 1024))  # same size, streamed
    s, rss = run_predict([str(model), str(small), "-o", str(work / "o1z"), *common])
    rows.append(("streamed", f"{n}x{n} zarr", n * n, s, rss, None))

    big = write_zarr(work / f"big{args.size}.ome.zarr", (args.size, args.size), (1024, 1024))
    s, rss = run_predict([str(model), str(big), "-o", str(work / "o2"), *common])
    rows.append(("streamed", f"{args.size}x{args.size} zarr", args.size**2, s, rss, None))

    if args.volume_z:
        z, xy = args.volume_z, args.volume_xy
        vol = write_zarr(work / f"vol{z}.ome.zarr", (z, xy, xy), (1, 1024, 1024))
        s, rss = run_predict([str(model), str(vol), "--slices", "-o", str(work / "o3"), *common])
        rows.append(("streamed --slices", f"{z}x{xy}x{xy} zarr", z * xy * xy, s, rss, 512 * xy * xy))

    base = (rows[0][3] - startup) / rows[0][2]
    print(f"\n{'case':<18} {'input':<22} {'Mpx':>7} {'s':>8} {'ns/px':>7} {'ratio':>6} {'peak RSS MB':>12}")
    for case, what, px, s, rss, full in rows:
        per = (s - startup) / px
        print(
            f"{case:<18} {what:<22} {px / 1e6:7.1f} {s:8.1f} {per * 1e9:7.1f} {per / base:6.2f} {rss:12.0f}"
        )
        if full:
            print(f"{'':<18} 512 slices extrapolated: {startup + per * full:.0f} s ({full / 1e6:.0f} Mpx)")
    streamed_rss = rows[2][4]
    print(f"\npeak RSS of the {args.size}² run: {streamed_rss:.0f} MB (goal < 1536 MB)")
    if not args.keep and args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
