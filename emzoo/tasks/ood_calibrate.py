"""Record a package's out-of-distribution statistics from in-distribution images, and measure how
well they tell other image types apart (``emzoo calibrate``).

:func:`calibrate` predicts every image with the package (so that the output features are those
``emzoo predict`` sees), fits :class:`~emzoo.tasks.ood_score.OodStats` on the reference images,
calibrates the thresholds on them (leave-one-out), and measures the false-warning rate on held-out
in-distribution images and, given images of other types, the separation: AUROC per type and
overall, and the share of each type flagged. :mod:`emzoo.tasks.ood_package` writes the
result into a new package.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.errors import UsageError, literal
from emzoo.io import Image, ImageMeta, expand_inputs, read_image
from emzoo.tasks.ood_features import IMAGE_FEATURES, image_features, output_features, output_features_of
from emzoo.tasks.ood_score import OodStats, auroc, fit, leave_one_out, score

log = logging.getLogger(__name__)

MAX_SLICES = 11  # a volume given to a 2D model counts as this many evenly spaced z slices
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Scored:
    """One image's features and score."""

    name: str
    features: dict[str, float]
    score: float = 0.0


@dataclass
class Calibration:
    """What :func:`calibrate` found: the statistics, every image's score, the separation table."""

    stats: OodStats
    reference: list[Scored]
    held_out: list[Scored] = field(default_factory=list)
    others: dict[str, list[Scored]] = field(default_factory=dict)

    def false_warning_rate(self) -> float | None:
        """The share of held-out in-distribution images flagged (None without any)."""
        if not self.held_out:
            return None
        return float(np.mean([s.score > self.stats.threshold for s in self.held_out]))

    def separation(self) -> dict[str, dict[str, float]]:
        """``{type or "overall": {"auroc", "flagged", "images"}}`` against the held-out images (the
        reference images' leave-one-out scores where there are none)."""
        negatives = [s.score for s in self.held_out] or [float(v) for v in leave_one_out(self.stats)]
        table: dict[str, dict[str, float]] = {}
        everything: list[float] = []
        for kind, scored in self.others.items():
            values = [s.score for s in scored]
            everything += values
            table[kind] = {
                "auroc": auroc(negatives, values),
                "flagged": float(np.mean([v > self.stats.threshold for v in values])),
                "images": len(values),
            }
        if len(self.others) > 1:
            table["overall"] = {
                "auroc": auroc(negatives, everything),
                "flagged": float(np.mean([v > self.stats.threshold for v in everything])),
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


def features_of(predictor, image: Image) -> dict[str, float]:
    """Image and output features of one image, the outputs predicted by ``predictor`` as ``emzoo
    predict`` does (``{}`` for an image the check cannot describe, e.g. a constant one)."""
    found = image_features(image)
    if not found:
        return {}
    with np.errstate(all="ignore"):
        outputs = predictor.predict(image)
    return found | output_features(predictor.spec, image, outputs)


def _scored(
    predictor, images: Sequence[tuple[str, Image]], what: str, progress: Progress | None
) -> list[Scored]:
    out = []
    for k, (name, image) in enumerate(images):
        if progress is not None:
            progress(f"{what} {k + 1}/{len(images)}: {Path(name).name}")
        values = features_of(predictor, image)
        if not values:
            log.warning("%s: constant or too small, left out of the calibration", name)
            continue
        out.append(Scored(name, values))
    return out


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
    ref = _scored(predictor, reference, "reference", progress)
    if len(ref) < 3:
        raise UsageError(f"calibration needs at least 3 usable in-distribution images, got {len(ref)}")
    held = _scored(predictor, held_out, "held-out", progress)
    outputs = output_features_of(spec)
    stats = fit(
        [s.features for s in ref],
        features=[f.name for f in (*IMAGE_FEATURES, *outputs)],
        floors=[f.floor for f in (*IMAGE_FEATURES, *outputs)],
        image_features=len(IMAGE_FEATURES),
        names=[_short(s.name) for s in ref],
    )
    result = Calibration(stats, ref, [_rescored(stats, s) for s in held])
    for kind, images in (others or {}).items():
        result.others[kind] = [_rescored(stats, s) for s in _scored(predictor, images, kind, progress)]
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


def _rescored(stats: OodStats, s: Scored) -> Scored:
    return Scored(s.name, s.features, score(stats, s.features).score)


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
