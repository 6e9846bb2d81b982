"""``emzoo evaluate``: a package's metrics on any folder of images with labels, through the runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emzoo.errors import EmzooError, InputError, UsageError
from emzoo.io import expand_inputs, read_image
from emzoo.package.load import open_model
from emzoo.runtime.layout import apply_layout, input_layout
from emzoo.runtime.predictor import Predictor
from emzoo.runtime.settings import DeviceSpec, TileSettings
from emzoo.tasks.counting import count_outputs, counting_config
from emzoo.tasks.detection import detection_scores, read_particle_labels


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


def _as_input(image, tensor) -> np.ndarray:
    """The image in the model input's axes (batch included), as ``emzoo predict`` gives it: a
    grey image with identical RGB channels (a JPEG) becomes one channel."""
    return np.asarray(apply_layout(image.data, input_layout(image.data, image.meta.axes, tensor)))


def _label(uc, path: Path) -> np.ndarray:
    """The use case's label; a file it cannot read is one error line naming it."""
    try:
        return np.asarray(uc.read_label(path))
    except EmzooError:
        raise
    except Exception as e:  # the use case's reader (PIL, tifffile...) on a damaged or wrong file
        raise InputError(f"{path}: cannot be read as a label ({type(e).__name__}: {e})") from e


def _metrics(uc, prediction, target, image: Path, label: Path, spatial: int) -> dict[str, float]:
    """The use case's metrics of one image; a label of another size than its prediction (the image's
    size) is one error line naming both."""
    got, want = np.shape(target)[-spatial:], np.shape(prediction)[-spatial:]
    if got != want:
        size = "x".join(map(str, want))
        raise InputError(
            f"{label}: the label is {'x'.join(map(str, got))} px, but the prediction of its image "
            f"{image.name} is {size} px: a label must have its image's size"
        )
    try:
        return uc.metrics(prediction, target)
    except EmzooError:
        raise
    except Exception as e:  # e.g. channels the use case does not expect
        raise InputError(
            f"{label}: the {uc.name} metrics cannot compare it with the prediction of {image.name} "
            f"({type(e).__name__}: {e})"
        ) from e


def evaluate_folders(
    model: str | Path,
    images: Path,
    labels: Path,
    *,
    usecase: str | None = None,
    weight_format: str | None = None,
    device: DeviceSpec | str = "auto",
    tta: bool | None = None,
) -> dict[str, Any]:
    """Predict every image with the package (on ``device``, at its precision; with test-time
    augmentation when ``tta``, None: as the package asks) and score it against its label with the use
    case's metrics."""
    from emzoo.train.discovery import get_usecase

    package = open_model(model)
    spec = package.spec
    if usecase is None and counting_config(spec) is not None:
        return _evaluate_counting(model, package, Path(images), Path(labels), weight_format, device, tta)
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
    predictor = Predictor(package, weight_format=weight_format, device=device, settings=TileSettings(tta=tta))
    tin = spec.inputs[0]
    output_id = spec.outputs[0].id
    samples = []
    for image_path, label_path in pairs:
        image = read_image(image_path)
        target = _label(uc, label_path)
        prediction = predictor.run({tin.id: _as_input(image, tin)})[output_id][0]
        samples.append(
            {
                "image": str(image_path),
                "label": str(label_path),
                "metrics": _metrics(uc, prediction, target, image_path, label_path, len(tin.spatial_axes)),
            }
        )
    metric_names = list(samples[0]["metrics"])
    return {
        "model": str(model),
        "usecase": name,
        "weights": predictor.weights.format,
        "precision": predictor.precision.precision,
        "tta": predictor.tta,
        "sample_count": len(samples),
        "metrics": {k: float(np.mean([s["metrics"][k] for s in samples])) for k in metric_names},
        "samples": samples,
    }


def _evaluate_counting(
    model,
    package,
    images: Path,
    labels: Path,
    weight_format: str | None,
    device: DeviceSpec | str,
    tta: bool | None,
) -> dict[str, Any]:
    """A counting package against YOLO box or point-CSV labels: its centres (the count the runtime
    reports) matched one-to-one with the labelled particles (:mod:`emzoo.tasks.detection`)."""
    if not labels.is_dir():
        raise UsageError(f"{labels}: not a folder of label files")
    config = counting_config(package.spec)
    predictor = Predictor(package, weight_format=weight_format, device=device, settings=TileSettings(tta=tta))
    tin = package.spec.inputs[0]
    samples = []
    for image_path, label_path in pair_files(images, labels):
        image = read_image(image_path)
        shape = dict(zip(image.meta.axes, image.data.shape, strict=False))
        truth = read_particle_labels(label_path, (shape["y"], shape["x"]))  # an RGB JPEG is yxc
        outputs = {k: v[0] for k, v in predictor.run({tin.id: _as_input(image, tin)}).items()}
        result = count_outputs(outputs, config)
        scores = detection_scores(result.centres, truth, diameters=result.diameters)
        samples.append({"image": str(image_path), "label": str(label_path), "metrics": scores})
    names = list(samples[0]["metrics"])
    return {
        "model": str(model),
        "usecase": package.spec.emzoo.get("usecase") or "counting",
        "weights": predictor.weights.format,
        "precision": predictor.precision.precision,
        "tta": predictor.tta,
        "sample_count": len(samples),
        "metrics": {k: float(np.mean([s["metrics"][k] for s in samples])) for k in names},
        "samples": samples,
    }


__all__ = ["evaluate_folders", "pair_files"]
