"""Record a package's out-of-distribution statistics from in-distribution images, and measure how
well they tell other image types apart (``emzoo calibrate``).

:func:`calibrate` predicts every image with the package (so that the output features are those
``emzoo predict`` sees), fits :class:`~emzoo.tasks.ood.score.OodStats` on the reference images,
calibrates the thresholds on them (leave-one-out), and measures the false-warning rate on held-out
in-distribution images and, given images of other types, the separation: AUROC per type and
overall, and the share of each type flagged. :mod:`emzoo.tasks.ood.package` writes the
result into a new package.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.errors import UsageError, literal
from emzoo.io import Image, ImageMeta, expand_inputs, read_image
from emzoo.tasks.ood.embedding import (
    FROM_PREDICTION,
    REFERENCE_GRID,
    Embedder,
    ReferenceFit,
    cut_network,
    distance,
    input_tensor,
    tap_prediction,
    tapped_cells,
)
from emzoo.tasks.ood.embedding import fit_reference as fit_embedding
from emzoo.tasks.ood.features import IMAGE_FEATURES, image_features, output_features, output_features_of
from emzoo.tasks.ood.score import (
    HELD_OUT_MARGIN,
    HELD_OUT_QUANTILE,
    OodStats,
    auroc,
    cross_fitted_false_warnings,
    fit,
    held_out_threshold,
    leave_one_out,
    score,
)

log = logging.getLogger(__name__)

MAX_SLICES = 11  # a volume given to a 2D model counts as this many evenly spaced z slices
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Scored:
    """One image's features and score, and its network embedding (cells) and that score."""

    name: str
    features: dict[str, float]
    score: float = 0.0
    cells: np.ndarray | None = None
    embedding_score: float | None = None


@dataclass(frozen=True)
class EmbeddingRecord:
    """The network cut for embeddings (ONNX bytes), the tensor it ends at, the reference fit."""

    model: bytes
    node: str
    fit: ReferenceFit
    read: str = "crop"  # or FROM_PREDICTION: the cells were read during the predictions


@dataclass
class Calibration:
    """What :func:`calibrate` found: the statistics, every image's score, the separation table."""

    stats: OodStats
    reference: list[Scored]
    held_out: list[Scored] = field(default_factory=list)
    others: dict[str, list[Scored]] = field(default_factory=dict)
    embedding: EmbeddingRecord | None = None
    cross_fitted: float | None = None  # the false-warning rate when held-out images set thresholds

    def ratio(self, s: Scored) -> float:
        """How far ``s`` lies out, in units of the thresholds: the larger of score / threshold and
        (with an embedding) embedding score / its threshold; above 1: out of distribution."""
        ratio = s.score / self.stats.threshold
        if self.embedding is not None and s.embedding_score is not None:
            ratio = max(ratio, s.embedding_score / self.embedding.fit.threshold)
        return float(ratio)

    def false_warning_rate(self) -> float | None:
        """The share of held-out in-distribution images flagged (None without any): cross-fitted where
        they took part in the thresholds (:func:`~emzoo.tasks.ood.score.cross_fitted_false_warnings`)."""
        if not self.held_out:
            return None
        if self.cross_fitted is not None:
            return self.cross_fitted
        return float(np.mean([self.ratio(s) > 1 for s in self.held_out]))

    def separation(self) -> dict[str, dict[str, float]]:
        """``{type or "overall": {"auroc", "flagged", "images"}}`` against the held-out images (the
        reference images' leave-one-out scores where there are none), on :meth:`ratio`."""
        if self.held_out:
            negatives = [self.ratio(s) for s in self.held_out]
        else:
            negatives = [float(v) / self.stats.threshold for v in leave_one_out(self.stats)]
        table: dict[str, dict[str, float]] = {}
        everything: list[float] = []
        for kind, scored in self.others.items():
            values = [self.ratio(s) for s in scored]
            everything += values
            table[kind] = {
                "auroc": auroc(negatives, values),
                "flagged": float(np.mean([v > 1 for v in values])),
                "images": len(values),
            }
        if len(self.others) > 1:
            table["overall"] = {
                "auroc": auroc(negatives, everything),
                "flagged": float(np.mean([v > 1 for v in everything])),
                "images": len(everything),
            }
        return table


def read_images(arguments: Sequence[str | Path], *, spatial: int = 2) -> list[tuple[str, Image]]:
    """The images of ``arguments`` (files, folders, globs), each with a name; a volume given to a
    model with ``spatial`` = 2 space axes counts as up to :data:`MAX_SLICES` evenly spaced z slices."""
    found = []
    for item in expand_inputs(list(arguments)):
        image = read_image(item.path)
        axes = image.meta.axes
        if spatial == 2 and "z" in axes and image.shape[axes.index("z")] > 1:
            k = axes.index("z")
            n = image.shape[k]
            for z in np.unique(np.linspace(0, n - 1, min(MAX_SLICES, n)).round().astype(int)):
                data = np.take(np.asarray(image.data), int(z), axis=k)
                found.append(
                    (f"{item.path}[z={z}]", Image(data, image.meta.with_axes(axes.replace("z", ""))))
                )
        else:
            found.append((str(item.path), image))
    return found


def features_of(predictor, image: Image, node: str = "", grid: int = 1) -> tuple[dict[str, float], Any]:
    """Image and output features of one image, the outputs predicted by ``predictor`` as ``emzoo
    predict`` does (``{}`` for an image the check cannot describe, e.g. a constant one); with the
    cells of the network's tensor ``node`` read during that prediction (``grid`` x ``grid`` crops:
    :func:`~emzoo.tasks.ood.embedding.tap_prediction`), or None where none were read."""
    found = image_features(image)
    if not found:
        return {}, None
    tapped = tap_prediction(predictor, node, image, grid) if node else None
    with np.errstate(all="ignore"):
        outputs = predictor.predict(image)
    cells = None if tapped is None else tapped_cells(tapped)
    return found | output_features(predictor.spec, image, outputs), cells


def _scored(
    predictor,
    images: Sequence[tuple[str, Image]],
    what: str,
    progress: Progress | None,
    node: str = "",
    grid: int = 1,
) -> list[tuple[Scored, Image]]:
    out = []
    for k, (name, image) in enumerate(images):
        if progress is not None:
            progress(f"{what} {k + 1}/{len(images)}: {Path(name).name}")
        values, cells = features_of(predictor, image, node, grid)
        if not values:
            log.warning("%s: constant or too small, left out of the calibration", name)
            continue
        out.append((Scored(name, values, cells=cells), image))
    return out


def _embedder(predictor) -> tuple[Embedder, str] | None:
    """The package's network cut for embeddings (:mod:`emzoo.tasks.ood.embedding`), or None when it
    has no ONNX weights, no pooling step, an input the embedding does not cover, or onnx is missing."""
    import tempfile

    weights = predictor.spec.weights.get("onnx")
    if weights is None or input_tensor(predictor.spec) is None:
        return None
    try:
        import onnx  # noqa: F401  (the cut needs it; predicting does not)
    except ImportError:
        log.warning("onnx is not installed: the out-of-distribution check records no network features")
        return None
    source = predictor.package.verified_file(weights.source, weights.sha256)
    with tempfile.TemporaryDirectory(prefix="emzoo-embedding-") as folder:
        path = Path(folder) / "embedding.onnx"
        node = cut_network(source, path)
        if node is None:
            return None
        return Embedder(path.read_bytes()), node


def calibrate(
    predictor,
    reference: Sequence[tuple[str, Image]],
    held_out: Sequence[tuple[str, Image]] = (),
    others: Mapping[str, Sequence[tuple[str, Image]]] | None = None,
    *,
    progress: Progress | None = None,
) -> Calibration:
    """Fit the statistics on ``reference`` (in-distribution images, usually the training images),
    calibrate the thresholds on them, and score ``held_out`` (in-distribution images not among
    them: the false-warning rate) and ``others`` (image type -> images)."""
    spec = predictor.spec
    net, node = _embedder(predictor) or (None, "")
    ref = _scored(predictor, reference, "reference", progress, node, REFERENCE_GRID)
    if len(ref) < 3:
        raise UsageError(f"calibration needs at least 3 usable in-distribution images, got {len(ref)}")
    # the network's features as the prediction reads them; where it could not (weights other than
    # ONNX, images not one plane), every image's crops go through the cut network on their own
    read = FROM_PREDICTION if node and all(s.cells is not None for s, _ in ref) else "crop"
    tapped = node if read == FROM_PREDICTION else ""  # the other images are read as the reference was
    held = _scored(predictor, held_out, "held-out", progress, tapped)
    outputs = output_features_of(spec)
    stats = fit(
        [s.features for s, _ in ref],
        features=[f.name for f in (*IMAGE_FEATURES, *outputs)],
        floors=[f.floor for f in (*IMAGE_FEATURES, *outputs)],
        image_features=len(IMAGE_FEATURES),
        names=[_short(s.name) for s, _ in ref],
    )

    def with_cells(pairs: list[tuple[Scored, Image]], grid: int = 1) -> list[Scored]:
        """The images' scores, with the cells of their network features when there are any."""
        if net is None or read == FROM_PREDICTION:
            return [s for s, _ in pairs]
        return [replace(s, cells=net.embed_image(spec, image, grid=grid)) for s, image in pairs]

    ref_scored = with_cells(ref, REFERENCE_GRID)
    cells = [s.cells for s in ref_scored if s.cells is not None]
    record = None
    if net is not None and len(cells) >= 3:
        record = EmbeddingRecord(net.model_bytes, node, fit_embedding(cells), read)
    held_out_scored = [_rescored(stats, s, record) for s in with_cells(held)]
    stats, record, cross_fitted = _with_held_out(stats, record, held_out_scored)
    result = Calibration(stats, ref_scored, held_out_scored, embedding=record, cross_fitted=cross_fitted)
    for kind, images in (others or {}).items():
        scored = with_cells(_scored(predictor, images, kind, progress, tapped))
        result.others[kind] = [_rescored(stats, s, record) for s in scored]
    return result


def calibrate_arrays(
    package,
    reference: Sequence[np.ndarray],
    held_out: Sequence[np.ndarray] = (),
    *,
    axes: str,
    trust_package_code: bool = False,
) -> Calibration:
    """:func:`calibrate` on in-memory images with the axes ``axes`` (what the packager has: the
    training images as reference, the validation images as held-out), run by ``package``."""
    from emzoo.runtime.predictor import Predictor

    predictor = Predictor(package, trust_package_code=trust_package_code, device="cpu")

    def named(arrays: Sequence[np.ndarray], what: str) -> list[tuple[str, Image]]:
        return [(f"{what} {k + 1}", Image(np.asarray(a), ImageMeta(axes=axes))) for k, a in enumerate(arrays)]

    return calibrate(predictor, named(reference, "training image"), named(held_out, "held-out image"))


def _with_held_out(
    stats: OodStats, record: EmbeddingRecord | None, held: list[Scored]
) -> tuple[OodStats, EmbeddingRecord | None, float | None]:
    """The thresholds loosened where the held-out images need it (:func:`held_out_threshold`), and
    the cross-fitted false-warning rate (None: too few held-out images, the rules stand)."""
    columns = [[s.score for s in held]]
    rules = [stats.threshold]
    if record is not None and all(s.embedding_score is not None for s in held):
        columns.append([s.embedding_score for s in held])
        rules.append(record.fit.threshold)
    table = np.array(columns, np.float64).T.reshape(len(held), len(columns))
    cross_fitted = cross_fitted_false_warnings(rules, table)
    if cross_fitted is None:
        return stats, record, None
    image_only = [score(stats, s.features, image_only=True).score for s in held]
    loosened = {
        "threshold": held_out_threshold(stats.threshold, columns[0]),
        "threshold_image": held_out_threshold(stats.threshold_image, image_only),
    }
    rule = (
        f"{stats.spacings:g} x the median leave-one-out score of the reference images, or, where larger, "
        f"{HELD_OUT_MARGIN:g} x the {HELD_OUT_QUANTILE:g} quantile of the {len(held)} held-out images' scores"
    )
    calibration = {**stats.calibration, "rule": rule, "held_out_images": len(held)}
    stats = replace(stats, **loosened, calibration=calibration)
    if len(rules) == 2:
        fit = replace(record.fit, threshold=held_out_threshold(record.fit.threshold, columns[1]))
        record = replace(record, fit=fit)
    return stats, record, cross_fitted


def _rescored(stats: OodStats, s: Scored, record: EmbeddingRecord | None = None) -> Scored:
    far = None
    if record is not None and s.cells is not None:
        far = distance(record.fit.vectors, s.cells)
    return replace(s, score=score(stats, s.features).score, embedding_score=far)


def _short(name: str) -> str:
    """A reference image's name as the record keeps it: the last two parts of its path."""
    parts = Path(name).parts
    return "/".join(parts[-2:])


def parse_other(text: str) -> tuple[str, str]:
    """``TYPE=IMAGES`` of ``--other``: the type's name (16 characters at most) and its images."""
    kind, sep, images = text.partition("=")
    if not sep or not kind.strip() or not images:
        raise UsageError(f"{{other}} {literal(text)}: write it as TYPE=IMAGES, e.g. SEM=images/sem/")
    if len(kind.strip()) > 16:
        raise UsageError(f"{{other}} {literal(text)}: the type's name is at most 16 characters long")
    return kind.strip(), images


def separation_rows(result: Calibration) -> list[dict[str, Any]]:
    """The separation table as rows for printing (type, images, AUROC, flagged)."""
    return [{"type": kind, **row} for kind, row in result.separation().items()]
