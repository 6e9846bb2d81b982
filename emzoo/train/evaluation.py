"""``emzoo evaluate``: a package's metrics on any folder of images with labels, through the runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emzoo.errors import InputError, UsageError
from emzoo.io import expand_inputs, read_image
from emzoo.package.load import open_model
from emzoo.runtime.predictor import Predictor


def pair_files(images: Path, labels: Path) -> list[tuple[Path, Path]]:
    """Image and label files matched by name without suffix (``0.png`` and ``0.png``; ``a.jpg`` and
    ``a.txt``)."""
    by_stem: dict[str, Path] = {}
    for f in sorted(Path(labels).iterdir()):
        if f.is_file() and not f.name.startswith("."):
            by_stem.setdefault(f.stem, f)
    pairs, missing = [], []
    for item in expand_inputs([images]):
        label = by_stem.get(item.path.stem)
        (pairs if label else missing).append((item.path, label))
    if missing:
        names = ", ".join(p.name for p, _ in missing[:5])
        raise InputError(
            f"{len(missing)} image(s) have no label file in {labels} with the same name: {names}"
        )
    if not pairs:
        raise InputError(f"{images}: no images to evaluate")
    return pairs


def _in_input_axes(data: np.ndarray, axes: str, n_axes: int) -> np.ndarray:
    """A 2D ``yx`` image for a ``cyx`` model input gets its channel axis."""
    arr = np.asarray(data)
    if axes in ("yx", "zyx") and arr.ndim == n_axes - 1:
        return arr[None]
    return arr


def evaluate_folders(
    model: str | Path,
    images: Path,
    labels: Path,
    *,
    usecase: str | None = None,
    weight_format: str | None = None,
) -> dict[str, Any]:
    """Predict every image with the package and score it against its label with the use case's metrics."""
    from emzoo.train.discovery import get_usecase

    package = open_model(model)
    spec = package.spec
    name = usecase or spec.emzoo.get("usecase")
    if not name:
        raise UsageError(
            f"{model} does not name the use case it was trained for; give it with {{usecase=NAME}} "
            "(`emzoo train --list` shows them)"
        )
    uc = get_usecase(name)
    if not Path(labels).is_dir():
        raise UsageError(f"{labels}: not a folder of label files")
    pairs = pair_files(Path(images), Path(labels))
    predictor = Predictor(package, weight_format=weight_format)
    tin = spec.inputs[0]
    output_id = spec.outputs[0].id
    samples = []
    for image_path, label_path in pairs:
        image = read_image(image_path)
        data = _in_input_axes(image.data, image.meta.axes, len(tin.axes) - 1)
        prediction = predictor.run({tin.id: data[None]})[output_id][0]
        target = uc.read_label(label_path)
        samples.append(
            {"image": str(image_path), "label": str(label_path), "metrics": uc.metrics(prediction, target)}
        )
    metric_names = list(samples[0]["metrics"])
    return {
        "model": str(model),
        "usecase": name,
        "weights": predictor.weights.format,
        "sample_count": len(samples),
        "metrics": {k: float(np.mean([s["metrics"][k] for s in samples])) for k in metric_names},
        "samples": samples,
    }


__all__ = ["evaluate_folders", "pair_files"]
