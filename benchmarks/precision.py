"""fp32 against int8 (and bf16/fp16 where they run) with ``emzoo predict --precision`` (CPU, whole processes).

Usage: python benchmarks/precision.py [--model zoo_models/em-membrane-unet2d] [--runs 3] [--quick]

1. Speed: one 4096x4096 uint8 EM image (real ISBI 2012 slices side by side, as in
   ``predict_vs_bioimageio.py``); ``emzoo predict --precision P`` for each precision, as whole processes
   that alternate (fp32, int8, fp32, int8, ...) so that a busy machine slows them alike. A warm-up round
   first (its int8 run quantizes the model into the benchmark's own cache; its time is shown apart).
   bf16 and fp16 are tried once: where emzoo refuses them, the reason is printed.
2. Accuracy: the membrane model on its held-out test slices (ISBI 2012 slices 20-24,
   zoo_models/em-membrane-unet2d/README.md): membrane F1 (dice at 0.5) and adapted Rand error with
   :mod:`emzoo.metrics`, fp32 vs int8 (calibrated on the package's test input, and on the training
   slices 0-16 with ``--calibrate``), and their change (goal: <= 0.005 each).

``--quick``: a 1024x1024 image, one timed round, two test slices: to check that the script works, not
for numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from predict_vs_bioimageio import SHARED, em_like, measure  # noqa: E402

GOAL_RATIO = 0.6  # int8 (or bf16) time / fp32 time on the 4096^2 image
GOAL_DELTA = 0.005  # largest change of membrane F1 and adapted Rand error
TEST_SLICES = range(20, 25)  # the membrane model's held-out test split


def refusal(cmd: list[str], env: dict) -> str | None:
    """The one-line error of a run emzoo refuses (exit 2), else None (it ran)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode == 2:
        return proc.stderr.strip().splitlines()[-1]
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return None


def speed(model: str, image: Path, work: Path, runs: int, env: dict) -> dict[str, list[float]]:
    """Wall seconds per precision over alternating runs (the warm-up round left out)."""
    emzoo = [
        sys.executable,
        "-m",
        "emzoo",
        "predict",
        model,
        str(image),
        "-q",
        "--overwrite",
        "--device",
        "cpu",
    ]
    precisions = ["fp32", "int8"]
    for extra in ("bf16", "fp16"):
        why = refusal([*emzoo, "-o", str(work / f"out_{extra}"), "--precision", extra], env)
        if why is None:
            precisions.append(extra)
        else:
            print(f"  {extra}: refused: {why}")
    times: dict[str, list[float]] = {p: [] for p in precisions}
    rss: dict[str, float] = dict.fromkeys(precisions, 0.0)
    for i in range(runs + 1):
        for p in precisions:
            os.environ.update(env)
            seconds, peak = measure([*emzoo, "-o", str(work / f"out_{p}"), "--precision", p], work)
            note = "  (warm-up" + (", quantizes" if p == "int8" else "") + ")" if i == 0 else ""
            print(f"  {p:<5} run {i}: {seconds:6.2f} s  {peak:5.2f} GB{note}")
            if i:
                times[p].append(seconds)
                rss[p] = max(rss[p], peak)
    print("\n| precision | median s | peak RSS GB | ratio to fp32 |\n|---|---|---|---|")
    base = statistics.median(times["fp32"])
    for p in precisions:
        median = statistics.median(times[p])
        print(f"| {p} | {median:.2f} | {rss[p]:.2f} | {median / base:.2f} |")
    return times


def accuracy(model: str, slices: list[int], env: dict) -> None:
    """Membrane F1 and adapted Rand error, fp32 vs int8, on the held-out test slices: int8 calibrated on
    the package's test input (the default) and on the training slices 0-16 (``--calibrate``)."""
    os.environ.update(env)
    from PIL import Image as PILImage

    from emzoo import metrics
    from emzoo.io import Image, ImageMeta
    from emzoo.runtime.predictor import Predictor
    from emzoo.runtime.settings import DeviceSpec

    root = SHARED / "train"
    if not (root / "image").is_dir():
        print(f"accuracy: skipped ({root} is absent)")
        return
    training = [str(root / "image" / f"{n}.png") for n in range(17)]
    devices = {
        "fp32": DeviceSpec("cpu"),
        "int8": DeviceSpec("cpu", precision="int8"),
        "int8, calibrated on training slices": DeviceSpec("cpu", precision="int8", calibrate=tuple(training)),
    }
    predictors = {name: Predictor(model, device=device) for name, device in devices.items()}
    for name, predictor in predictors.items():
        if name != "fp32":
            print(f"  {name}: {predictor.precision.note()}")
    scores: dict[str, dict[str, list[float]]] = {p: {"f1": [], "are": []} for p in predictors}
    for n in slices:
        raw = np.asarray(PILImage.open(root / "image" / f"{n}.png"))
        membrane = np.asarray(PILImage.open(root / "label" / f"{n}.png")) == 0
        for p, predictor in predictors.items():
            prob = next(iter(predictor.predict(Image(raw, ImageMeta(axes="yx"))).values())).data
            scores[p]["f1"].append(metrics.dice(prob, membrane))
            scores[p]["are"].append(metrics.membrane_adapted_rand_error(prob, membrane))
    shown = ", ".join(map(str, slices))
    print(f"\nmembrane model, test slices {shown} (mean; per slice in brackets):\n")
    print("| metric | precision | value | change from fp32 | goal |\n|---|---|---|---|---|")
    for key, metric in (("f1", "membrane F1"), ("are", "adapted Rand error")):
        base = float(np.mean(scores["fp32"][key]))
        for p in predictors:
            value = float(np.mean(scores[p][key]))
            each = " ".join(f"{v:.4f}" for v in scores[p][key])
            ok = "" if p == "fp32" else ("ok" if abs(value - base) <= GOAL_DELTA else "MISSED")
            change = "" if p == "fp32" else f"{value - base:+.4f}"
            print(f"| {metric} | {p} | {value:.4f} [{each}] | {change} | {ok} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(REPO / "zoo_models" / "em-membrane-unet2d"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1024^2 image, one timed round, 2 test slices")
    ap.add_argument("--workdir", default=str(REPO / "benchmarks" / "_work"))
    args = ap.parse_args()
    size, runs, slices = (
        (1024, 1, list(TEST_SLICES)[:2]) if args.quick else (4096, args.runs, list(TEST_SLICES))
    )
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    image = work / f"em_{size}.tif"
    if not image.exists():
        tifffile.imwrite(image, em_like(size))
    cache = work / "precision-cache"  # its own cache: the first int8 run quantizes
    env = {**os.environ, "EMZOO_CACHE_DIR": str(cache)}
    print(f"model: {args.model}; {size}x{size} uint8 image; {runs} timed round(s); {os.cpu_count()} CPUs")
    times = speed(args.model, image, work, runs, env)
    ratio = statistics.median(times["int8"]) / statistics.median(times["fp32"])
    print(f"\nint8 / fp32: {ratio:.2f} (goal <= {GOAL_RATIO}{', quick run: not a measurement' * args.quick})")
    accuracy(args.model, slices, env)


if __name__ == "__main__":
    main()
