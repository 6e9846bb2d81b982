"""The network's own features for the out-of-distribution check: how the package's network sees an
input, compared with how it saw its training images.

Cheap image statistics (:mod:`emzoo.tasks.ood.features`) tell modalities apart when the training
images are alike; when they are diverse (six catalysts, two contrasts, 640-2048 px fields of view)
every other EM type falls inside their spread. The network's activations do not: features learnt to
find particles describe a membrane, a noise field or a tomogram slice differently from any training
image. This module keeps the package's network up to the activations that enter its **last
down-sampling step** (for a U-Net: the deepest encoder level above the bottleneck; the first axis of
a pool node's input) as a small second ONNX model in the package (:data:`MODEL_FILE`), cut from its
ONNX weights with ``onnx.utils.extract_model`` when the statistics are recorded (``onnx`` is needed
then only; predicting runs it with ONNX Runtime like any ONNX weights).

An image's **embedding** is read from the central crop of at most :data:`CROP` px that the image
features use, normalised by the package's own pre-processing (its statistics taken on the crop): in
each cell of a 2 x 2 grid, the mean and the standard deviation of every channel. Its **score** is
the median over the cells of the cosine distance to the nearest training cell (``1 - cos``); the
training images give cells from a 3 x 3 grid of crops each (:data:`REFERENCE_GRID`), so that a large
training image is represented by all its regions. The **threshold** follows the rule of the other
score: :data:`SPACINGS` typical spacings of the training images, 4 x the median of their
leave-one-image-out scores (their cells against the other images' cells).

**Where the activations come from** (``read`` in ``config.emzoo.ood.embedding``): ``prediction``
(:data:`FROM_PREDICTION`), the same cells read from the prediction's own tiles, normalised as the
prediction normalises the whole image (:mod:`emzoo.runtime.inner`: the network hands the tensor back
as one more output of every block, so the check costs no second pass); the cut network
(:data:`MODEL_FILE`) stays in the package for runs that cannot tap their backend (TorchScript or
state-dict weights, streamed inputs, volumes predicted slice by slice): there the crop goes through
it, normalised on its own. Without ``read`` (``crop``), the crop is always run on its own, as the
reference cells were recorded.

>>> rng = np.random.default_rng(0)
>>> images = [rng.normal(size=(4, 8)) + 5 for _ in range(5)]
>>> fit = fit_reference(images)
>>> bool(distance(fit.vectors, images[0]) < 1e-6), fit.threshold > 0
(True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emzoo.io.meta import Image
from emzoo.tasks.ood.features import CROP, plane, window

if TYPE_CHECKING:
    from emzoo.runtime.inner import RegionStatistics

MODEL_FILE = "ood_embedding.onnx"  # the package's network up to its last down-sampling step
REFERENCE_FILE = "ood_embedding_reference.npy"  # (cells, 1 + features): owner image, unit vector
SPACINGS = 4.0
GRID = 2  # cells per axis of one crop's embedding
REFERENCE_GRID = 3  # crops per axis of a training image larger than CROP
POOLS = ("MaxPool", "AveragePool")
FROM_PREDICTION = "prediction"  # config.emzoo.ood.embedding.read: cells read during the prediction


def cut_network(onnx_path: str | Path, output: str | Path) -> str | None:
    """Write the network of ``onnx_path`` up to the input of its last pooling node to ``output``;
    returns that tensor's name, or None when the graph has no pooling node (nothing is written)."""
    import onnx
    from onnx.utils import extract_model

    model = onnx.load(str(onnx_path), load_external_data=False)
    pools = [n for n in model.graph.node if n.op_type in POOLS]
    if not pools:
        return None
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    node = pools[-1].input[0]
    extract_model(str(onnx_path), str(output), inputs, [node])
    return node


def input_tensor(spec) -> Any | None:
    """The one input of a 2D single-channel model, or None when the embedding cannot be read."""
    if len(spec.inputs) != 1:
        return None
    t = spec.inputs[0]
    spatial = [a.id for a in t.axes if a.is_spatial]
    if spatial != ["y", "x"] or (t.n_channels or 1) != 1:
        return None
    return t


def model_input(spec, plane: np.ndarray) -> tuple[np.ndarray, tuple[int, int]] | None:
    """``plane`` (y, x) pre-processed as the package says, in its input's layout, mirror-padded to a
    size it accepts; with the size of the plane. None for models the embedding does not cover."""
    from emzoo.runtime import processing

    t = input_tensor(spec)
    if t is None or plane.ndim != 2 or min(plane.shape) < 8:
        return None
    sizes = {}
    for axis in t.axes:
        if axis.id in ("y", "x"):
            n = plane.shape["yx".index(axis.id)]
            target = axis.rule.valid(n)
            sizes[axis.id] = (min(n, target) if target >= 8 else n, target)
    plane = plane[: sizes["y"][0], : sizes["x"][0]]  # a model of a fixed smaller size: its size
    shape = [sizes[a.id][0] if a.id in sizes else 1 for a in t.axes]
    pads = [(0, sizes[a.id][1] - sizes[a.id][0]) if a.id in sizes else (0, 0) for a in t.axes]
    data = plane.astype(np.float32).reshape(shape)
    try:
        pre = processing.bind(t.processing, processing.Tensor(data, t.axis_ids), {})
        data = np.asarray(pre(data), dtype=np.float32)
    except (KeyError, ValueError, NotImplementedError):  # e.g. a step that needs another tensor
        return None
    if any(p != (0, 0) for p in pads):
        data = np.pad(data, pads, mode="symmetric")
    return data, plane.shape


def cells(activations: np.ndarray, valid: tuple[int, int], padded: tuple[int, int]) -> np.ndarray:
    """``(GRID * GRID, 2 * channels)``: mean and std of each channel of ``(1, C, h, w)`` activations
    in each cell of a grid over the part that covers the unpadded image, as unit vectors."""
    a = np.asarray(activations, dtype=np.float64)[0]
    h = max(1, round(a.shape[1] * valid[0] / padded[0]))
    w = max(1, round(a.shape[2] * valid[1] / padded[1]))
    a = a[:, :h, :w]
    rows = []
    for ys in np.array_split(np.arange(h), min(GRID, h)):
        for xs in np.array_split(np.arange(w), min(GRID, w)):
            block = a[:, ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1].reshape(a.shape[0], -1)
            rows.append(np.concatenate([block.mean(axis=1), block.std(axis=1)]))
    return _unit(np.array(rows))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def distance(reference: np.ndarray, vectors: np.ndarray, owners=None, exclude: int | None = None) -> float:
    """Median over ``vectors`` of the cosine distance to the nearest row of ``reference`` (rows of
    the image ``exclude`` left out, by ``owners``)."""
    similarity = _unit(np.asarray(vectors, dtype=np.float64)) @ np.asarray(reference, dtype=np.float64).T
    if exclude is not None:
        similarity[:, np.asarray(owners) == exclude] = -1.0
    return float(np.median(1.0 - similarity.max(axis=1)))


@dataclass(frozen=True)
class ReferenceFit:
    """The training images' cells, whose image each is, and the calibrated threshold."""

    vectors: np.ndarray  # (cells, features), unit rows
    owners: np.ndarray  # (cells,) the index of the training image of each row
    spacing: float  # median leave-one-image-out score
    threshold: float


def fit_reference(per_image: Sequence[np.ndarray]) -> ReferenceFit:
    """The reference cells of the training images (one array of cells each) and the threshold:
    :data:`SPACINGS` x the median of their leave-one-image-out scores."""
    vectors = _unit(np.concatenate([np.asarray(v, dtype=np.float64) for v in per_image]))
    owners = np.concatenate([np.full(len(v), k) for k, v in enumerate(per_image)])
    loo = [distance(vectors, v, owners, exclude=k) for k, v in enumerate(per_image)]
    spacing = max(float(np.median(loo)), 1e-6)
    return ReferenceFit(vectors, owners, spacing, SPACINGS * spacing)


class Embedder:
    """The embedding model of one package, run with ONNX Runtime on the CPU."""

    def __init__(self, model: str | Path | bytes):
        """``model``: the ONNX file or its bytes."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.model_bytes = model if isinstance(model, bytes) else Path(model).read_bytes()
        self.session = ort.InferenceSession(self.model_bytes, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def embed(self, spec, plane: np.ndarray) -> np.ndarray | None:
        """The cells of one (y, x) plane (at most :data:`CROP` px per axis) for the package ``spec``,
        or None."""
        prepared = model_input(spec, plane)
        if prepared is None:
            return None
        data, valid = prepared
        (activations,) = self.session.run(None, {self.input: data})
        return cells(activations, valid, data.shape[-2:])

    def embed_image(self, spec, image: Image, *, grid: int = 1) -> np.ndarray | None:
        """The cells of ``image``: of its central crop, or (``grid`` > 1) of a grid x grid of crops
        spread over it (a training image)."""
        found = [c for c in (self.embed(spec, p) for p in crops(image, grid)) if c is not None]
        return np.concatenate(found) if found else None


def crops(image: Image, grid: int = 1) -> list[np.ndarray]:
    """Planes (y, x) of at most :data:`CROP` px of ``image`` (middle z slice, channels averaged): the
    central one, or ``grid`` x ``grid`` evenly spread over it."""
    if grid <= 1:
        return [plane(image)]
    data = plane(image, crop=None)
    if data.size == 0:
        return []
    return [data[y0:y1, x0:x1] for y0, y1, x0, x1 in crop_boxes(data.shape, grid)]


def crop_boxes(shape: tuple[int, int], grid: int = 1) -> list[tuple[int, int, int, int]]:
    """The crops of :func:`crops` in a (y, x) plane of ``shape``, as (y0, y1, x0, x1): the central one
    (as :func:`~emzoo.tasks.ood.features.window` cuts it), or ``grid`` x ``grid`` spread over it."""
    h, w = shape
    if grid <= 1:
        ys, xs = (range(n)[cut] for n, cut in zip(shape, window(shape, "yx"), strict=True))
        return [(ys.start, ys.stop, xs.start, xs.stop)]
    ys = np.unique(np.linspace(0, max(h - CROP, 0), grid).round().astype(int))
    xs = np.unique(np.linspace(0, max(w - CROP, 0), grid).round().astype(int))
    return [(int(y), int(y) + min(h, CROP), int(x), int(x) + min(w, CROP)) for y in ys for x in xs]


def tap_prediction(predictor, node: str, image: Image, grid: int = 1) -> RegionStatistics | None:
    """Ask ``predictor`` to read the cells of ``image``'s crops (:func:`crop_boxes`) from ``node``
    during its next prediction of ``image``; None where it cannot (then nothing is read): the
    backend cannot return inner tensors, or ``image`` is not one plane (y, x) of the model's input."""
    from emzoo.runtime.inner import RegionStatistics

    axes = image.meta.axes
    if input_tensor(predictor.spec) is None or "y" not in axes or "x" not in axes:
        return None
    if any(n > 1 for a, n in zip(axes, image.shape, strict=True) if a not in "yxc"):  # one plane
        return None
    shape = (image.shape[axes.index("y")], image.shape[axes.index("x")])
    if min(shape) < 8:
        return None
    statistics = RegionStatistics(node, crop_boxes(shape, grid), grid=GRID)
    return statistics if predictor.tap(statistics) else None


def tapped_cells(statistics: RegionStatistics) -> np.ndarray | None:
    """The cells that a tapped prediction read (:func:`tap_prediction`), as unit vectors; None when
    no prediction has filled them."""
    found = [c for c in statistics.cells() if c is not None]
    return _unit(np.concatenate(found)) if found else None


@dataclass(frozen=True)
class Loaded:
    """A package's embedder, its reference cells and their threshold."""

    embedder: Embedder
    vectors: np.ndarray
    threshold: float
    node: str = ""
    read: str = "crop"  # or FROM_PREDICTION: the reference cells were read during predictions

    def score(self, spec, image: Image) -> float | None:
        """The embedding score of ``image`` (its central crop through :attr:`embedder`), or None."""
        found = self.embedder.embed_image(spec, image)
        return None if found is None else distance(self.vectors, found)

    def tap(self, predictor, image: Image) -> RegionStatistics | None:
        """Where the reference cells were read during predictions, the cells of ``image`` to read
        during ``predictor``'s prediction of it (:func:`tap_prediction`); else None."""
        if self.read != FROM_PREDICTION or not self.node:
            return None
        return tap_prediction(predictor, self.node, image)

    def score_tapped(self, statistics: RegionStatistics) -> float | None:
        """The embedding score of the cells a prediction read into ``statistics``, or None."""
        found = tapped_cells(statistics)
        return None if found is None else distance(self.vectors, found)


_LOADED: dict[tuple[str, ...], Loaded] = {}


def load_embedding(package, entry: dict[str, Any] | None) -> Loaded | None:
    """The embedding check of ``package`` (a loaded :class:`~emzoo.package.load.ModelPackage`) as
    ``config.emzoo.ood.embedding`` describes it, its files checked against their sha256 (once per
    process); None when it has none or its input is not one 2D single-channel image."""
    if not entry or input_tensor(package.spec) is None:
        return None
    key = (str(package.root), str(entry.get("model_sha256")), str(entry.get("reference_sha256")))
    if key not in _LOADED:
        model = package.verified_file(entry["model"], entry.get("model_sha256"))
        path = package.verified_file(entry["reference"], entry.get("reference_sha256"))
        table = np.load(path, allow_pickle=False)  # column 0: the training image of each cell
        _LOADED[key] = Loaded(
            Embedder(model),
            table[:, 1:],
            float(entry["threshold"]),
            str(entry.get("node") or ""),
            str(entry.get("read") or "crop"),
        )
    return _LOADED[key]


def reference_table(fit: ReferenceFit) -> np.ndarray:
    """What :data:`REFERENCE_FILE` holds: the owner of each cell, then its unit vector (float32)."""
    return np.column_stack([fit.owners, fit.vectors]).astype(np.float32)
