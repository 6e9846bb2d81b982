"""The out-of-distribution score, its calibration and the statistics a package stores
(``config.emzoo.ood``).

The score of an image is its distance to the nearest in-distribution reference image: the root mean
square of the feature differences, each in units of the feature's spread over the reference images
(robust: 1.4826 x the median absolute deviation, at least the feature's floor). The nearest
neighbour keeps several modes in distribution at once (bright-field and HAADF training images, TEM
tiles and cryo-EM micrographs) where one mean and covariance would pool them.

The threshold is :data:`SPACINGS` (4) typical spacings of the reference images: 4 x the median of
their leave-one-out scores (each image against the others). The median, not a high quantile: a
training image alone of its kind (one micrograph among TEM tiles) has a large leave-one-out score
that says nothing about how far new images of the common kinds fall. Held-out in-distribution
images, where there are at least 2 x :data:`MIN_HELD_OUT`, can only loosen it
(:func:`held_out_threshold`: for near-duplicate training images), and the false-warning rate is
then measured cross-fitted (:func:`cross_fitted_false_warnings`). Two thresholds are kept: over all
features, and over the image features alone (for inputs whose outputs are not in memory: streamed,
or checked before a run).

>>> ref = [{"a": float(v), "b": 0.0} for v in range(10)]
>>> stats = fit(ref, features=("a", "b"), floors=(0.1, 0.1), image_features=1)
>>> round(stats.threshold, 3), score(stats, {"a": 4.5, "b": 0.0}).score < stats.threshold
(0.763, True)
>>> score(stats, {"a": 40.0, "b": 0.0}).score > stats.threshold
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from emzoo.errors import PackageError

SCHEMA = 2  # 2: spectrum, band sparsity and histogram-shape features; bounded logs (emzoo 0.1, 2026-12)
SPACINGS = 4.0  # the threshold: this many typical spacings (median leave-one-out score) of the reference
MAD_TO_SD = 1.4826
HELD_OUT_QUANTILE = 0.99  # held-out in-distribution images loosen the threshold to this quantile...
HELD_OUT_MARGIN = 1.1  # ... times this, where that is above the spacing rule (held_out_threshold)
MIN_HELD_OUT = 4  # held-out images needed before they count for the threshold


@dataclass(frozen=True)
class OodStats:
    """What ``config.emzoo.ood`` holds (see docs/trust.md for the schema)."""

    features: tuple[str, ...]  # column names; the first ``image_features`` come from the raw input
    image_features: int
    center: tuple[float, ...]  # the reference images' median of each feature
    scale: tuple[float, ...]  # the spread that standardises each feature
    reference: tuple[tuple[float, ...], ...]  # raw feature values, one row per reference image
    threshold: float  # over all features
    threshold_image: float  # over the image features alone
    spacings: float = SPACINGS
    calibration: dict[str, Any] = field(default_factory=dict)  # where the thresholds come from
    names: tuple[str, ...] = ()  # the reference images (for the record)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "method": "nearest reference image, RMS of standardised feature differences",
            "features": list(self.features),
            "image_features": self.image_features,
            "center": [_round(v) for v in self.center],
            "scale": [_round(v) for v in self.scale],
            "reference": [[_round(v) for v in row] for row in self.reference],
            "names": list(self.names),
            "threshold": _round(self.threshold),
            "threshold_image": _round(self.threshold_image),
            "spacings": self.spacings,
            "calibration": dict(self.calibration),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OodStats:
        """Checked construction from ``config.emzoo.ood``; a malformed entry, or one of another schema
        (:func:`schema_note`), raises PackageError."""
        note = schema_note(d)
        if note is not None:
            raise PackageError(note)
        try:
            features = tuple(str(f) for f in d["features"])
            n = len(features)
            stats = cls(
                features=features,
                image_features=int(d["image_features"]),
                center=tuple(float(v) for v in d["center"]),
                scale=tuple(float(v) for v in d["scale"]),
                reference=tuple(tuple(float(v) for v in row) for row in d["reference"]),
                threshold=float(d["threshold"]),
                threshold_image=float(d["threshold_image"]),
                spacings=float(d.get("spacings", SPACINGS)),
                calibration=dict(d.get("calibration") or {}),
                names=tuple(str(v) for v in d.get("names") or ()),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise PackageError(f"config.emzoo.ood is malformed ({type(e).__name__}: {e})") from None
        rows_ok = stats.reference and all(len(r) == n for r in stats.reference)
        if len(stats.center) != n or len(stats.scale) != n or not rows_ok or min(stats.scale) <= 0:
            raise PackageError(
                f"config.emzoo.ood is malformed: {n} features but center, scale or reference rows of "
                "another length (or a spread of 0)"
            )
        return stats


def schema_note(d: Mapping[str, Any]) -> str | None:
    """Why ``config.emzoo.ood`` cannot be used by this emzoo (None when it can): statistics of
    another schema were recorded from features that this version computes differently.

    >>> print(schema_note({"schema": 1}))  # doctest: +ELLIPSIS
    its out-of-distribution statistics (config.emzoo.ood) have schema 1, this emzoo reads schema 2: ...
    """
    try:
        schema = int(d.get("schema", SCHEMA))  # every entry written names its schema
    except (TypeError, ValueError):
        schema = -1
    if schema == SCHEMA:
        return None
    return (
        f"its out-of-distribution statistics (config.emzoo.ood) have schema {d.get('schema')}, this "
        f"emzoo reads schema {SCHEMA}: the check is off for it; record them again with `emzoo calibrate "
        "MODEL IMAGES... -o NEW_MODEL`"
    )


def _round(v: float) -> float:
    return float(f"{float(v):.6g}")


@dataclass(frozen=True)
class Score:
    """One image's score and the features that set it apart (largest standardised difference from
    the nearest reference image first): ``(feature, value, reference low, reference high, z)``."""

    score: float
    threshold: float
    deviations: tuple[tuple[str, float, float, float, float], ...] = ()


def _matrix(stats: OodStats, columns: Sequence[int]) -> np.ndarray:
    ref = np.asarray(stats.reference, np.float64)[:, columns]
    center = np.asarray(stats.center)[columns]
    return (ref - center) / np.asarray(stats.scale)[columns]


def score(stats: OodStats, values: Mapping[str, float], *, image_only: bool = False) -> Score:
    """The score of one image's features. Features it lacks (outputs not computed) are left out;
    with only the image features, or ``image_only``, the image threshold applies."""
    limit = stats.image_features if image_only else len(stats.features)
    columns = [i for i, f in enumerate(stats.features[:limit]) if f in values and np.isfinite(values[f])]
    if not columns:
        return Score(0.0, stats.threshold_image)
    full = len(columns) == len(stats.features)
    threshold = stats.threshold if full else stats.threshold_image
    if not full:
        columns = [i for i in columns if i < stats.image_features]
    ref = _matrix(stats, columns)
    x = (
        np.array([values[stats.features[i]] for i in columns]) - np.asarray(stats.center)[columns]
    ) / np.asarray(stats.scale)[columns]
    distances = np.sqrt(np.mean((ref - x) ** 2, axis=1))
    nearest = int(np.argmin(distances))
    raw = np.asarray(stats.reference, np.float64)[:, columns]
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    z = np.abs(x - ref[nearest])
    order = np.argsort(-z)
    deviations = tuple(
        (
            stats.features[columns[k]],
            float(values[stats.features[columns[k]]]),
            float(lo[k]),
            float(hi[k]),
            float(z[k]),
        )
        for k in order
    )
    return Score(float(distances[nearest]), threshold, deviations)


def leave_one_out(stats: OodStats, *, image_only: bool = False) -> np.ndarray:
    """Each reference image's distance to its nearest other reference image."""
    limit = stats.image_features if image_only else len(stats.features)
    ref = _matrix(stats, list(range(limit)))
    if len(ref) < 2:
        return np.zeros(len(ref))
    d = np.sqrt(np.mean((ref[:, None, :] - ref[None, :, :]) ** 2, axis=2))
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


def fit(
    reference: Sequence[Mapping[str, float]],
    *,
    features: Sequence[str],
    floors: Sequence[float],
    image_features: int,
    names: Sequence[str] = (),
    spacings: float = SPACINGS,
) -> OodStats:
    """Statistics of the ``reference`` images' features and the thresholds calibrated on them:
    ``spacings`` x the median leave-one-out score. Features missing from any reference image are
    dropped (an output that gave no value)."""
    if len(reference) < 3:
        raise ValueError(f"the check needs at least 3 in-distribution images, got {len(reference)}")
    kept = [(f, fl, i < image_features) for i, (f, fl) in enumerate(zip(features, floors, strict=True))]
    kept = [k for k in kept if all(k[0] in r and np.isfinite(r[k[0]]) for r in reference)]
    names_kept = tuple(k[0] for k in kept)
    rows = np.array([[r[f] for f in names_kept] for r in reference], np.float64)
    center = np.median(rows, axis=0)
    floors_kept = np.array([k[1] for k in kept])
    mad = np.median(np.abs(rows - center), axis=0) * MAD_TO_SD
    draft = OodStats(
        names_kept,
        sum(k[2] for k in kept),
        tuple(float(v) for v in center),
        tuple(float(v) for v in np.maximum(mad, floors_kept)),
        tuple(tuple(float(v) for v in r) for r in rows),
        threshold=0.0,
        threshold_image=0.0,
        spacings=spacings,
        names=tuple(names),
    )
    spacing = [float(np.median(leave_one_out(draft, image_only=only))) for only in (False, True)]
    calibration = {
        "reference_images": len(reference),
        "spacing": round(spacing[0], 6),
        "spacing_image": round(spacing[1], 6),
        "rule": f"{spacings:g} x the median leave-one-out score of the reference images",
    }
    return replace(
        draft, threshold=spacings * spacing[0], threshold_image=spacings * spacing[1], calibration=calibration
    )


def held_out_threshold(rule: float, held_out: Sequence[float]) -> float:
    """The threshold once held-out in-distribution images are known: the spacing ``rule``'s, or,
    where larger, :data:`HELD_OUT_MARGIN` x the :data:`HELD_OUT_QUANTILE` quantile of their scores
    (the rule's alone for fewer than :data:`MIN_HELD_OUT` of them). Training images that are
    near-duplicates of each other (adjacent slices of one volume, tiles of one mosaic) lie closer
    together than a new acquisition of the same kind lies to them, so their spacing alone would call
    new in-distribution images unusual; held-out images only ever loosen the rule, never tighten it.

    >>> held_out_threshold(1.0, [0.5, 0.6, 0.7, 0.8]), round(held_out_threshold(1.0, [1, 2, 2, 2]), 3)
    (1.0, 2.2)
    """
    values = np.asarray([v for v in held_out if v is not None and np.isfinite(v)], np.float64)
    if values.size < MIN_HELD_OUT:
        return float(rule)
    return float(max(rule, HELD_OUT_MARGIN * np.quantile(values, HELD_OUT_QUANTILE)))


def cross_fitted_false_warnings(rules: Sequence[float], held_out: np.ndarray) -> float | None:
    """The false-warning rate of :func:`held_out_threshold` measured without reusing an image:
    ``held_out`` (images x scores, one column per score with its spacing rule in ``rules``) in two
    halves (alternate images), each half judged by the thresholds of the other; an image is a false
    warning when any of its scores is above its threshold. None for fewer than 2 x
    :data:`MIN_HELD_OUT` images (then the rules alone apply, and the plain rate is the measure).

    >>> round(cross_fitted_false_warnings([1.0], np.array([[0.5], [0.6], [0.7], [0.8]] * 2)), 2)
    0.0
    """
    held_out = np.asarray(held_out, np.float64)
    if len(held_out) < 2 * MIN_HELD_OUT:
        return None
    halves = np.arange(len(held_out)) % 2 == 0
    flagged = []
    for fitted, judged in ((halves, ~halves), (~halves, halves)):
        limits = [held_out_threshold(r, held_out[fitted, k]) for k, r in enumerate(rules)]
        flagged += list((held_out[judged] > np.asarray(limits)).any(axis=1))
    return float(np.mean(flagged))


def auroc(in_distribution: Sequence[float], other: Sequence[float]) -> float:
    """Area under the ROC curve of scores telling ``other`` (positives) from ``in_distribution``:
    the chance that an image of ``other`` scores higher than an in-distribution one (ties: half).

    >>> auroc([0.1, 0.2], [0.3, 0.2])
    0.875
    """
    a, b = np.asarray(in_distribution, np.float64), np.asarray(other, np.float64)
    if a.size == 0 or b.size == 0:
        return float("nan")
    greater = (b[:, None] > a[None, :]).sum()
    ties = (b[:, None] == a[None, :]).sum()
    return float((greater + 0.5 * ties) / (a.size * b.size))
