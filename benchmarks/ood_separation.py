"""Out-of-distribution separation of the zoo models: each model's held-out in-distribution images vs
every other EM image type of the shared data, through the documented ``emzoo calibrate`` command.

For each model the script builds one ``emzoo calibrate`` command from the package's split
(``config.emzoo.split``): the training images as reference, the validation and test images of the
training data's kind as held-out images (the false-warning rate), every other image type as
``--other TYPE=...`` (AUROC and the share flagged). It runs it, and prints the table the package
then holds (``config.emzoo.ood.measured``). ``--write`` calibrates the zoo packages in place (their
card section and ``config.bioimageio.evaluations`` entry come from the same run); without it the
calibrated copies go to a temporary folder. Run from the repository root:

    python benchmarks/ood_separation.py                      # every zoo model, printed only
    python benchmarks/ood_separation.py --write              # ... and written into zoo_models/
    python benchmarks/ood_separation.py --models em-denoise-n2v --print-commands
    python benchmarks/ood_separation.py --cost               # the check's time vs the prediction's
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

DATA = "../shared/data"  # as the cards write it: relative to the repository root
ISBI, STEM = "isbi2012_membranes", "stem_nanoparticles/images"
BRIGHT_FIELD = ("PtC1", "PtC2", "PtCo1", "PtCo3", "Pt_carbon1", "Pt_carbon2")  # dark particles
CRYO = ("cryoem_micrographs/epu2.9_example.mrc", "cryoem_micrographs/fei-extended.mrc")


def image_types(data: str) -> dict[str, list[str]]:
    """Every EM image type of the shared data, as calibrate arguments (files and folders)."""
    root = Path(data)
    stem = sorted(p.name for p in (root / STEM).iterdir() if p.suffix.lower() == ".jpg")
    return {
        "ssTEM": [f"{data}/{ISBI}/train/image", f"{data}/{ISBI}/unlabeled"],
        "STEM HAADF": [f"{data}/{STEM}/{n}" for n in stem if Path(n).stem not in BRIGHT_FIELD],
        "STEM BF": [f"{data}/{STEM}/{n}" for n in stem if Path(n).stem in BRIGHT_FIELD],
        "atomic STEM": [f"{data}/em_file_formats"],
        "SEM": [f"{data}/sem_denoising"],
        "cryo-EM": [f"{data}/{c}" for c in CRYO],
        "noisy TEM": [f"{data}/noisy_tem"],
        "tomogram slices": [f"{data}/cryoet_tomogram/tomo.tif"],
    }


def plan(model: str, data: str) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """Reference images, held-out images and the other types of one zoo model, from its split."""
    split = _split(model)
    types = image_types(data)
    if model == "em-membrane-unet2d":
        where = f"{data}/{ISBI}/train/image"
        reference = [f"{where}/{n}" for n in split["train"]]
        held = [f"{where}/{n}" for n in split["val"] + split["test"]] + [f"{data}/{ISBI}/unlabeled"]
        del types["ssTEM"]
    elif model == "em-particle-counter":
        reference = [f"{data}/{STEM}/{n}" for n in split["train"]]
        held = [f"{data}/{STEM}/{n}" for n in split["val"] + split["test"]]
        del types["STEM HAADF"], types["STEM BF"]
    elif model == "em-denoise-n2v":
        # micrographs and SEM images enter whole (their statistics come from the central crop, which
        # the held-out bottom rows do not overlap); SEM is another type unless the model trained on it
        reference = sorted({f"{data}/{n.split('[')[0]}" for n in split["train"]})
        held = [f"{data}/{n}" for n in split["val"] if "[" not in n]
        del types["noisy TEM"]
        if any(n.startswith("sem_denoising/") for n in split["train"]):
            del types["SEM"]
        kept = [f"{data}/{n.split('[')[0]}" for n in split["train"] if "[" in n]
        types["cryo-EM"] = [c for c in types["cryo-EM"] if c not in kept]  # correlated noise: left out
    elif _data_paths(split):
        # a split of paths under the data folder (e.g. em-modality-classifier): the types any of whose
        # images it names are in distribution; every other type is another type
        reference = [f"{data}/{n}" for n in split["train"]]
        held = [f"{data}/{n}" for n in split.get("val", []) + split.get("test", [])]
        named = {f"{data}/{n}" for part in split.values() for n in part}
        for kind, paths in list(types.items()):
            if any(n == p or n.startswith(p.rstrip("/") + "/") for p in paths for n in named):
                del types[kind]
    else:
        raise SystemExit(f"{model}: no plan for this model (its config.emzoo.split names no data paths)")
    return reference, held, types


def _split(model: str) -> dict[str, list[str]]:
    rdf = yaml.safe_load(Path(f"zoo_models/{model}/rdf.yaml").read_text())
    return ((rdf.get("config") or {}).get("emzoo") or {}).get("split") or {}


def _data_paths(split: dict[str, list[str]]) -> bool:
    """Whether ``split`` names images by their path under the data folder (``folder/.../file``)."""
    names = [n for part in split.values() for n in part]
    return bool(split.get("train")) and all("/" in n and "[" not in n for n in names)


def zoo_models() -> list[str]:
    """The zoo models the script measures: the three with a plan of their own, and any other zoo
    model whose split names images under the data folder."""
    known = ["em-membrane-unet2d", "em-particle-counter", "em-denoise-n2v"]
    others = sorted(
        p.name for p in Path("zoo_models").iterdir() if (p / "rdf.yaml").is_file() and p.name not in known
    )
    return known + [m for m in others if _data_paths(_split(m))]


def command(model: str, data: str, output: str) -> list[str]:
    reference, held, types = plan(model, data)
    words = ["emzoo", "calibrate", f"zoo_models/{model}", *reference]
    for h in held:
        words += ["--held-out", h]
    for kind, paths in types.items():
        for p in paths:
            words += ["--other", f"{kind}={p}"]
    return [*words, "-o", output, "--overwrite", "-q"]


def table(package: str) -> list[str]:
    rdf = Path(package) / "rdf.yaml"
    ood = yaml.safe_load(rdf.read_text())["config"]["emzoo"]["ood"]
    measured = ood.get("measured", {})
    lines = [
        f"threshold {ood['threshold']:.3g} (image features alone {ood['threshold_image']:.3g}), "
        f"{ood['calibration']['reference_images']} reference images",
        f"false-warning rate on {measured.get('held_out_images', 0)} held-out images: "
        f"{measured.get('false_warning_rate', float('nan')):.1%}",
        f"{'type':<16} {'images':>6} {'AUROC':>7} {'flagged':>8}",
    ]
    for kind, row in measured.get("separation", {}).items():
        lines.append(f"{kind:<16} {row['images']:>6} {row['auroc']:>7.3f} {row['flagged']:>8.0%}")
    return lines


def cost(models: list[str], data: str, repeats: int = 11) -> None:
    """The check's time per image against the prediction's, on the first and the largest training
    image of each model, medians of ``repeats`` alternated runs: the check's own time (it runs twice
    per input in emzoo predict, before and after the model) plus what a prediction that reads the
    network's features (where the package has them) takes longer than a plain one, if anything."""
    import numpy as np

    from emzoo.io import Image, read_image
    from emzoo.runtime.predictor import Predictor
    from emzoo.tasks.ood import Check

    for model in models:
        predictor = Predictor(f"zoo_models/{model}")
        reference = plan(model, data)[0]
        largest = max(reference, key=lambda p: Path(p).stat().st_size if Path(p).is_file() else 0)
        for path in dict.fromkeys([reference[0], largest]):
            image = read_image(path)
            image = Image(np.asarray(image.data), image.meta)
            outputs = predictor.predict(image)
            predict, tapped, own = [], [], []
            for _ in range(repeats):
                start = time.perf_counter()
                outputs = predictor.predict(image)
                predict.append(time.perf_counter() - start)
                start = time.perf_counter()
                one = Check(predictor.spec.emzoo, image, predictor.spec, predictor.package, predictor)
                one.verdict()
                middle = time.perf_counter()
                outputs = predictor.predict(image)
                end = time.perf_counter()
                one.verdict(outputs)
                own.append(middle - start + time.perf_counter() - end)
                tapped.append(end - middle)
            p = float(np.median(predict))
            c = float(np.median(own)) + max(float(np.median(tapped)) - p, 0.0)  # the check + the tap
            read = "none" if one.embedding is None else "read during the prediction"
            if one.embedding is not None and one.tapped is None:
                read = "run on the crop on its own"
            shown = f"{model:<22} {Path(path).name:<16} {image.shape!s:<14}"
            timing = f"predict {p * 1e3:7.1f} ms  check {c * 1e3:5.1f} ms  ({c / p:.1%}"
            print(f"{shown} {timing}; network features: {read})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=DATA, help="the shared data folder (default: %(default)s)")
    parser.add_argument(
        "--models",
        nargs="*",
        default=None,
        help="zoo models (default: every one with a plan, see zoo_models)",
    )
    parser.add_argument("--write", action="store_true", help="calibrate the zoo packages in place")
    parser.add_argument("--print-commands", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--cost", action="store_true", help="time the check against the prediction instead")
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        raise SystemExit(f"{args.data}: no such folder (run from the repository root)")
    args.models = args.models or zoo_models()
    if args.cost:
        cost(args.models, args.data)
        return
    scratch = Path(tempfile.mkdtemp(prefix="emzoo-ood-"))
    for model in args.models:
        output = f"zoo_models/{model}" if args.write else str(scratch / model)
        words = command(model, args.data, output)
        if args.print_commands:
            print(shlex.join(words))
            continue
        start = time.perf_counter()
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        subprocess.run([sys.executable, "-m", "emzoo", *words[1:]], check=True, env=env)
        print(f"\n== {model} ({time.perf_counter() - start:.0f} s)")
        print("\n".join(table(output)))


if __name__ == "__main__":
    main()
