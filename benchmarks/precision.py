"""fp32 against int8 (and bf16/fp16 where they run) with ``emzoo predict --precision`` (CPU, whole processes).

Usage: python benchmarks/precision.py [--model zoo_models/em-membrane-unet2d] [--runs 3] [--quick]

1. Speed: one 4096x4096 uint8 EM image (real ISBI 2012 slices side by side, as in
   ``predict_vs_bioimageio.py``); ``emzoo predict --precision P`` for each precision, as whole processes
   that alternate (fp32, int8, fp32, int8, ...) so that a busy machine slows them alike. A warm-up round
   first (its int8 run quantizes the model into the benchmark's own cache; its time is shown apart).
   bf16 and fp16 are tried once: where emzoo refuses them, the reason is printed.
2. Accuracy, each zoo model on its own metric, fp32 vs int8: the membrane model on its held-out test
   slices (ISBI 2012 slices 20-24, zoo_models/em-membrane-unet2d/README.md): membrane F1 (dice at 0.5)
   and adapted Rand error (int8 calibrated on the package's test input, and on the training slices
   0-16 with ``--calibrate``; goal: each moves by <= 0.005); the counter's mean centre F1 on its six
   test images (<= 0.005); the denoiser's PSNR on the noisy SEM images, sigma 25 and 50 (<= 0.1 dB).
   A model that misses its goal must refuse int8 (``config.emzoo.precision.max_deviation``).

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
GOAL_PSNR = 0.1  # largest change of the denoiser's PSNR (dB)
TEST_SLICES = range(20, 25)  # the membrane model's held-out test split
COUNTER_TEST = ("Cu4", "Pd_silica3", "Pt_carbon1", "PtCo1", "PtW2", "Ru2")  # training/particle_counting


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


def membrane_accuracy(model: str, slices: list[int], env: dict) -> list[tuple[str, str, float, float]]:
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
        print(f"membrane accuracy: skipped ({root} is absent)")
        return []
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
    rows = []
    for key, metric in (("f1", "membrane F1"), ("are", "adapted Rand error")):
        base = float(np.mean(scores["fp32"][key]))
        for p in predictors:
            if p != "fp32":
                value = float(np.mean(scores[p][key]))
                rows.append((f"membrane ({len(slices)} test slices)", f"{metric}, {p}", base, value))
    return rows


def counter_accuracy(model: str, env: dict) -> list[tuple[str, str, float, float]]:
    """Centre F1 of a counting package, fp32 vs int8, on the particle data set's test images (through
    ``emzoo evaluate``'s scoring)."""
    os.environ.update(env)
    from emzoo.runtime.settings import DeviceSpec
    from emzoo.train.evaluation import evaluate_folders

    data = REPO.parent / "shared" / "data" / "stem_nanoparticles"
    if not (data / "images").is_dir():
        print(f"counter accuracy: skipped ({data} is absent)")
        return []
    work = Path(env["EMZOO_CACHE_DIR"]).parent / "counter_test"
    for kind in ("images", "labels"):
        (work / kind).mkdir(parents=True, exist_ok=True)
        for stem in COUNTER_TEST:
            for f in (data / kind).glob(f"{stem}.*"):
                if not (work / kind / f.name).exists():
                    (work / kind / f.name).symlink_to(f)
    f1 = {
        p: evaluate_folders(model, work / "images", work / "labels", device=DeviceSpec("cpu", precision=p))[
            "metrics"
        ]["f1"]
        for p in ("fp32", "int8")
    }
    return [(f"counter ({len(COUNTER_TEST)} test images)", "mean centre F1, int8", f1["fp32"], f1["int8"])]


def denoiser_accuracy(model: str, env: dict) -> list[tuple[str, str, float, float]]:
    """PSNR of a denoising package against the clean SEM image, fp32 vs int8, at noise sigma 25 and 50
    (the package returns grey levels, as the denoising use case's evaluation scores them)."""
    os.environ.update(env)
    from PIL import Image as PILImage

    from emzoo import metrics
    from emzoo.runtime.predictor import Predictor
    from emzoo.runtime.settings import DeviceSpec

    sem = REPO.parent / "shared" / "data" / "sem_denoising"
    if not (sem / "BSE.jpg").is_file():
        print(f"denoiser accuracy: skipped ({sem} is absent)")
        return []
    clean = np.asarray(PILImage.open(sem / "BSE.jpg").convert("L"), np.float64)
    predictors = {p: Predictor(model, device=DeviceSpec("cpu", precision=p)) for p in ("fp32", "int8")}
    rows = []
    for level in (25, 50):
        noisy = np.asarray(PILImage.open(sem / f"BSE_{level}sigma_noisy.jpg").convert("L"), np.float64)
        psnr = {}
        for p, predictor in predictors.items():
            tensor = predictor.spec.inputs[0]
            out = next(iter(predictor.run({tensor.id: noisy[None, None].astype(np.float32)}).values()))[0, 0]
            psnr[p] = metrics.psnr(np.clip(out, 0, 255), clean, data_range=255.0)
        rows.append(("denoiser (SEM)", f"PSNR dB, sigma {level}, int8", psnr["fp32"], psnr["int8"]))
    return rows


def without_precision_limit(model: str, work: Path) -> str:
    """A copy of the package folder without its ``config.emzoo.precision`` (the deviation it allows), so
    that int8 runs where emzoo refuses it and its metric change is measured again."""
    import shutil

    from bioimageio.spec import load_model_description, save_bioimageio_yaml_only

    rdf = Path(model) / "rdf.yaml"
    if not rdf.is_file():
        return model
    description = load_model_description(rdf, perform_io_checks=False)
    extra = dict(description.config.model_extra or {})
    if "precision" not in extra.get("emzoo", {}):
        return model
    copy = work / "unlimited" / Path(model).name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(model, copy)
    extra["emzoo"] = {k: v for k, v in extra["emzoo"].items() if k != "precision"}
    config = description.config.model_copy(update=extra)
    save_bioimageio_yaml_only(description.model_copy(update={"config": config}), copy / "rdf.yaml")
    return str(copy)


def accuracy(models: dict[str, str], slices: list[int], env: dict) -> None:
    """Each zoo model's own metric, fp32 against int8, with the goals of the issue (packages that refuse
    int8 are measured through a copy without their limit)."""
    work = Path(env["EMZOO_CACHE_DIR"]).parent
    models = {role: without_precision_limit(model, work) for role, model in models.items()}
    rows = membrane_accuracy(models["membrane"], slices, env)
    rows += counter_accuracy(models["counter"], env)
    rows += denoiser_accuracy(models["denoiser"], env)
    print("\n| model | metric | fp32 | int8 | change | goal |\n|---|---|---|---|---|---|")
    for model, metric, base, value in rows:
        goal = GOAL_PSNR if "PSNR" in metric else GOAL_DELTA
        ok = "ok" if abs(value - base) <= goal else "MISSED"
        print(f"| {model} | {metric} | {base:.4f} | {value:.4f} | {value - base:+.4f} | <= {goal} {ok} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(REPO / "zoo_models" / "em-membrane-unet2d"))
    ap.add_argument("--counter", default=str(REPO / "zoo_models" / "em-particle-counter"))
    ap.add_argument("--denoiser", default=str(REPO / "zoo_models" / "em-denoise-n2v"))
    ap.add_argument("--accuracy-only", action="store_true", help="skip the speed part")
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
    if not args.accuracy_only:
        times = speed(args.model, image, work, runs, env)
        ratio = statistics.median(times["int8"]) / statistics.median(times["fp32"])
        quick = ", quick run: not a measurement" * args.quick
        print(f"\nint8 / fp32: {ratio:.2f} (goal <= {GOAL_RATIO}{quick})")
    accuracy({"membrane": args.model, "counter": args.counter, "denoiser": args.denoiser}, slices, env)


if __name__ == "__main__":
    main()
