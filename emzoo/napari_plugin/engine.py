"""The "Run model" widget's work, without Qt: load a package, run it on layers (tiled, with a progress
callback and a cancel flag), and turn its outputs into napari layer-data tuples and table rows.

The run is the one ``emzoo predict`` makes for one file: the same :class:`~emzoo.runtime.predictor.
Predictor` (tiles, halo and device chosen as the CLI chooses them unless given), the same guards
(finite pixels, memory), the same out-of-distribution check (:func:`emzoo.tasks.ood.check_input`),
slice by slice for a 2D model on a volume, and the counting output kind's counts and centres.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.drivers import guards
from emzoo.drivers.outputs import is_value_table
from emzoo.drivers.slices import model_is_2d, predict_slices, takes_slices
from emzoo.errors import EmzooError, UsageError, literal, render
from emzoo.io.meta import Image
from emzoo.napari_plugin.layers import META_KEY, PIXEL, SPATIAL, LayerData
from emzoo.package.load import ModelPackage
from emzoo.package.spec import ModelSpec, TensorSpec
from emzoo.runtime.predictor import Predictor
from emzoo.runtime.settings import DeviceSpec, TileSettings
from emzoo.tasks.counting import CountResult, count_outputs, counting_config, summary_row
from emzoo.tasks.ood import check_input

Progress = Callable[[int, int], None]
# how the widget names the parameters that emzoo's messages name as {name}
FIELD_NAMES = {
    "tile": "Tile",
    "device": "Device",
    "halo": "Halo",
    "weight_format": "Weights",
    "stream=True": "emzoo predict --stream",  # out of core: the CLI's
}
DEFAULT_POINT_SIZE = 7.0  # px: the marker diameter when a counting model gives no object size
_PROBABILITY_OPS = ("sigmoid", "softmax")


class Cancelled(Exception):
    """The user cancelled the run."""


def message(error: BaseException) -> str:
    """An error as the one line the widget shows (emzoo's parameters named as the widget's fields)."""
    if isinstance(error, EmzooError):
        text = error.render(FIELD_NAMES)
    elif isinstance(error, Cancelled):
        text = "cancelled"
    elif isinstance(error, MemoryError):
        text = render("out of memory: try a smaller {tile}", FIELD_NAMES)
    else:
        text = f"{type(error).__name__}: {error}"
    return " ".join(text.split())


def parse_tile(text: str) -> tuple[int, ...] | None:
    """The widget's tile field: empty or ``auto`` (automatic), ``512`` or ``512,512``."""
    text = text.strip().lower()
    if text in ("", "auto"):
        return None
    try:
        sizes = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{{tile}} {literal(repr(text))}: give whole numbers, e.g. 512 or 512,512") from None
    return TileSettings(tile=sizes or None).tile


def load_predictor(
    source: ModelPackage | str | Path, *, device: str = "auto", tile: tuple[int, ...] | None = None
) -> Predictor:
    """The package (opened, or at ``source``) loaded for ``device``, its tile size checked against
    the model."""
    settings = TileSettings(tile=tile)
    predictor = Predictor(source, device=DeviceSpec.parse(device), settings=settings)
    guards.check_tile(predictor.spec, settings)
    return predictor


@dataclass
class Prediction:
    """One sample predicted: its outputs (as ``Predictor.predict`` gives them), the
    out-of-distribution warnings, the counts of a counting model, and whether it ran slice by slice."""

    outputs: dict[str, Image]
    warnings: list[str] = field(default_factory=list)
    counts: CountResult | None = None
    slices: bool = False


def predict_images(
    predictor: Predictor,
    images: Mapping[str, Image],
    *,
    names: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Prediction:
    """Predict one sample (an image per model input id); ``progress(done, total)`` after each batch
    of tiles (or slice); ``cancelled()`` is asked before and during the run and stops it with
    :class:`Cancelled`. ``names``: the layer name of each input, for messages."""
    spec = predictor.spec
    names = dict(names or {})
    missing = [t.id for t in spec.inputs if t.id not in images and not t.optional]
    if missing:
        raise UsageError(f"choose a layer for the model input(s) {', '.join(missing)}")

    def check() -> None:
        if cancelled is not None and cancelled():
            raise Cancelled()

    def on_step(done: int, total: int) -> None:
        check()
        if progress is not None:
            progress(done, total)

    check()
    for tid, image in images.items():
        guards.check_finite(Path(names.get(tid, tid)), image)
    first_id = spec.inputs[0].id
    first = images[first_id]
    guards.check_in_memory(spec, Path(names.get(first_id, first_id)), first)
    with np.errstate(all="ignore"):
        warnings = check_input(spec.emzoo, first)
    slices = model_is_2d(predictor) and takes_slices(images)
    if slices:
        outputs = predict_slices(predictor, images, progress=on_step)
    else:
        outputs = predictor.predict(images, progress=on_step)
    check()
    config = counting_config(spec)
    counts = count_outputs(outputs, config) if config is not None else None
    return Prediction(outputs, warnings, counts, slices)


# ------------------------------------------------------------------------------ outputs -> layers


@dataclass(frozen=True)
class Reference:
    """The input layer the outputs are drawn over: its name, axis letters, shape and scale/units
    (of the shown axes: an RGB layer's colour axis has none)."""

    name: str
    axes: str
    scale: Mapping[str, float]
    units: Mapping[str, str]

    @classmethod
    def of(cls, name: str, image: Image, attributes: Mapping[str, Any]) -> Reference:
        """From the emzoo image of a layer and the layer's attributes (:mod:`emzoo.napari_plugin.layers`)."""
        axes = image.meta.axes
        shown = axes[:-1] if attributes.get("rgb") else axes
        scale = tuple(attributes.get("scale") or (1.0,) * len(shown))
        units = tuple(str(u) for u in attributes.get("units") or ())
        return cls(
            name,
            axes,
            {a: float(s) for a, s in zip(shown, scale, strict=False)},
            {a: u for a, u in zip(shown, units, strict=False)},
        )


def _ratio(spec: ModelSpec, tensor: TensorSpec, letter: str) -> float:
    """Output pixels per input pixel along ``letter`` (an output 2x upsampled: 2.0)."""
    axis = next((a for a in tensor.axes if a.id == letter), None)
    if axis is None or axis.ref is None:
        return 1.0
    ref = spec.tensor(axis.ref.tensor).axis(axis.ref.axis)
    return ref.scale / axis.scale if axis.scale else 1.0


def _kwargs(name: str, axes: str, reference: Reference, spec: ModelSpec, tensor: TensorSpec) -> dict:
    """Name, scale (the input layer's, per output pixel), units and the emzoo record of one layer."""
    scale = tuple(
        reference.scale.get(a, 1.0) / (_ratio(spec, tensor, a) if a in SPATIAL else 1.0) for a in axes
    )
    units = tuple(reference.units.get(a, PIXEL) for a in axes)
    calibrated = {a: s for a, s, u in zip(axes, scale, units, strict=True) if a in SPATIAL and u != PIXEL}
    unit = next((u for a, u in zip(axes, units, strict=True) if a in calibrated), None)
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": scale,
        "axis_labels": tuple(axes),
        "metadata": {META_KEY: {"axes": axes, "pixel_size": calibrated, "unit": unit, "format": ""}},
    }
    if reference.units:
        kwargs["units"] = units
    return kwargs


def _is_labels(tensor: TensorSpec, data: np.ndarray) -> bool:
    return data.dtype.kind in "iub" or tensor.dtype.startswith(("int", "uint", "bool"))


def _image_layers(name: str, image: Image, tensor: TensorSpec, spec: ModelSpec, ref: Reference):
    """The layers of one output image: labels for integer outputs, else images (one per channel)."""
    data, axes = np.asarray(image.data), image.meta.axes
    planes: list[tuple[str, np.ndarray, str]] = [(name, data, axes)]
    if "c" in axes:
        c = axes.index("c")
        rest = axes.replace("c", "")
        labels = next((a.channel_names for a in tensor.axes if a.type == "channel"), ())
        n = data.shape[c]
        planes = [
            (f"{name} [{labels[i] if len(labels) == n else i}]" if n > 1 else name, np.take(data, i, c), rest)
            for i in range(n)
        ]
    layers = []
    for layer_name, plane, plane_axes in planes:
        kwargs = _kwargs(layer_name, plane_axes, ref, spec, tensor)
        if _is_labels(tensor, plane):
            layers.append(
                (plane.astype(np.int32 if plane.dtype.kind == "b" else plane.dtype), kwargs, "labels")
            )
            continue
        ops = {op.id for op in tensor.processing}
        if ops & set(_PROBABILITY_OPS) or (plane.size and 0 <= float(plane.min()) <= float(plane.max()) <= 1):
            kwargs.update(colormap="magma", contrast_limits=(0.0, 1.0), blending="additive", opacity=0.7)
        layers.append((plane, kwargs, "image"))
    return layers


def _value_row(name: str, tid: str, image: Image, tensor: TensorSpec) -> dict[str, Any]:
    values = np.asarray(image.data).reshape(-1)
    labels = next((a.channel_names for a in tensor.axes if a.type == "channel"), ())
    names = list(labels) if len(labels) == values.size else [f"v{i}" for i in range(values.size)]
    return {
        "layer": name,
        "output": tid,
        **{k: round(float(v), 6) for k, v in zip(names, values, strict=True)},
    }


def _points_layer(counts: CountResult, name: str, ref: Reference, spec: ModelSpec) -> LayerData:
    config = counting_config(spec)
    ndim = len(counts.axes)
    tensor = spec.output(config.output) if config is not None else spec.outputs[0]
    kwargs = _kwargs(f"{name} centres", counts.axes, ref, spec, tensor)
    features = {"score": counts.centres[:, ndim].astype(float)}
    diameters = getattr(counts, "diameters", None)  # a model that gives object sizes (px)
    if diameters is not None and len(diameters) == counts.n_centres:
        size = np.asarray(diameters, float)
        features["diameter_px"] = size
    else:
        size = float(2 * config.min_distance_px + 1) if config is not None else DEFAULT_POINT_SIZE
    kwargs.update(
        size=size,
        features=features,
        face_color="transparent",
        border_color="yellow",
        border_width=0.15,
    )
    return counts.centres[:, :ndim].astype(float), kwargs, "points"


def output_layers(
    prediction: Prediction, spec: ModelSpec, ref: Reference
) -> tuple[list[LayerData], list[dict]]:
    """The layer-data tuples of a prediction (images, labels, the centres of a counting model as
    points, sized by the objects' diameter when the model gives one) and its table rows (counts,
    values of outputs without spatial axes such as class scores). Layers keep the input's scale."""
    layers: list[LayerData] = []
    rows: list[dict] = []
    for tid, image in prediction.outputs.items():
        tensor = spec.output(tid)
        if is_value_table(tensor):
            rows.append(_value_row(ref.name, tid, image, tensor))
        else:
            layers += _image_layers(f"{ref.name} {tid}", image, tensor, spec, ref)
    if prediction.counts is not None:
        layers.append(_points_layer(prediction.counts, ref.name, ref, spec))
        row = summary_row(ref.name, prediction.counts)
        rows.append({"layer": row.pop("file"), **row, "n_centres": prediction.counts.n_centres})
    return layers, rows
