"""Evaluation metrics: one function per metric, numpy arrays in, a float out.

Segmentation (:func:`pixel_error`, :func:`dice`, :func:`adapted_rand_error`,
:func:`membrane_adapted_rand_error`, the ISBI 2012 challenge's :func:`v_rand` and :func:`v_info`),
restoration (:func:`psnr`, :func:`ssim`) and counting or detection
(:func:`count_mae`, :func:`count_relative_error`, :func:`detection_precision`,
:func:`detection_recall`, :func:`detection_f1`). Probability maps are turned into masks with
``prediction > threshold``; boolean masks pass through unchanged. scipy and scikit-image are
imported inside the functions that need them, so ``import emzoo.metrics`` stays light.

>>> import numpy as np
>>> truth = np.array([[1, 0], [0, 0]], bool)
>>> pixel_error(np.array([[0.9, 0.2], [0.7, 0.1]]), truth)
0.25
>>> dice(np.array([[0.9, 0.2], [0.7, 0.1]]), truth)
0.6666666666666666
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "adapted_rand_error",
    "count_mae",
    "count_relative_error",
    "detection_f1",
    "detection_precision",
    "detection_recall",
    "dice",
    "direction",
    "full_name",
    "match_pairs",
    "match_points",
    "membrane_adapted_rand_error",
    "pixel_error",
    "psnr",
    "short_names",
    "ssim",
    "v_info",
    "v_rand",
]


def _mask(x: np.ndarray, threshold: float) -> np.ndarray:
    x = np.asarray(x)
    return x if x.dtype == bool else x > threshold


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if np.shape(a) != np.shape(b):
        raise ValueError(f"prediction {np.shape(a)} and target {np.shape(b)} differ in shape")


# -- segmentation -----------------------------------------------------------------------------------


def pixel_error(prediction: np.ndarray, target: np.ndarray, *, threshold: float = 0.5) -> float:
    """Fraction of pixels whose class (``> threshold``) differs from the target mask (lower is better)."""
    _same_shape(prediction, target)
    return float(np.mean(_mask(prediction, threshold) != _mask(target, threshold)))


def dice(prediction: np.ndarray, target: np.ndarray, *, threshold: float = 0.5) -> float:
    """Dice coefficient (= F1 score) of the positive class, 1.0 when both masks are empty (higher is
    better)."""
    _same_shape(prediction, target)
    p, t = _mask(prediction, threshold), _mask(target, threshold)
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else float(2 * np.logical_and(p, t).sum() / total)


def adapted_rand_error(segmentation: np.ndarray, true_segmentation: np.ndarray) -> float:
    """Foreground-restricted adapted Rand error (1 - Rand F-score, as in ISBI 2012 and SNEMI3D; lower is
    better).

    Both arguments are label images in which 0 marks boundary or background. *Foreground-restricted*
    means that only pixels inside a true object (``true_segmentation > 0``) are scored: the true
    boundaries are ignored. Pixels that the proposal labels 0 are **not** one big object (that would
    merge every predicted boundary pixel into one huge segment); each counts as its own single-pixel
    segment, as in the SNEMI3D/ISBI scoring scripts, so that a boundary drawn through a cell counts
    as a split. No border thinning is applied, so values are not the challenge leaderboard's
    ``V_rand (thinned)``.
    """
    from skimage.metrics import adapted_rand_error as _are

    _same_shape(segmentation, true_segmentation)
    true = np.asarray(true_segmentation).astype(np.int64)
    if not np.any(true > 0):
        raise ValueError("the true segmentation has no foreground (no label > 0): nothing to score")
    seg = np.asarray(segmentation).astype(np.int64)
    zeros = seg == 0
    seg[zeros] = seg.max() + 1 + np.arange(int(zeros.sum()), dtype=np.int64)  # singletons
    with np.errstate(divide="ignore", invalid="ignore"):  # precision is 0/0 when all are singletons
        error, _, _ = _are(true, seg, ignore_labels=(0,))
    return float(error)


def membrane_adapted_rand_error(
    prediction: np.ndarray, target: np.ndarray, *, threshold: float = 0.5
) -> float:
    """The ISBI 2012 cell-level score from membrane maps (lower is better).

    ``prediction`` is a membrane probability (or mask), ``target`` the true membrane mask (2D or with
    leading length-1 axes). Cells are the 4-connected components of the non-membrane pixels of each,
    and :func:`adapted_rand_error` compares them, restricted to the true cell interiors.
    """
    from scipy import ndimage

    _same_shape(prediction, target)
    pred_cells = ~_mask(np.squeeze(prediction), threshold)
    true_cells = ~_mask(np.squeeze(target), threshold)
    structure = ndimage.generate_binary_structure(true_cells.ndim, 1)  # 4-connectivity in 2D
    seg, _ = ndimage.label(pred_cells, structure=structure)
    true, _ = ndimage.label(true_cells, structure=structure)
    return adapted_rand_error(seg, true)


# -- ISBI 2012 challenge scores ----------------------------------------------------------------------


_THINNING_PAD = 16  # px: membranes up to about twice as wide are thinned right up to the image's edge


def _cells_after_thinning(membrane: np.ndarray) -> np.ndarray:
    """Cells of a membrane mask with the membranes thinned to 1 px (skeletonised), as the challenge's
    "after thinning" scores do: the 4-connected components of what is not on the thinned membrane;
    0 on the membrane."""
    from scipy import ndimage
    from skimage.morphology import skeletonize

    # walls running into the image's edge are continued past it, so that their skeleton reaches the
    # edge instead of stopping short of it (which would join the cells on either side)
    pad = _THINNING_PAD
    thin = skeletonize(np.pad(membrane, pad, mode="edge"))[(slice(pad, -pad),) * membrane.ndim]
    cells, _ = ndimage.label(~thin, structure=ndimage.generate_binary_structure(membrane.ndim, 1))
    return cells


def _joint_fractions(prediction_cells: np.ndarray, true_cells: np.ndarray):
    """Joint, true and predicted fractions of the pixels inside true cells (foreground-restricted);
    predicted membrane pixels there count as singletons, each its own segment."""
    inside = true_cells > 0
    t, p = true_cells[inside].astype(np.int64), prediction_cells[inside].astype(np.int64)
    n = max(len(t), 1)
    singles = p == 0
    pairs = np.unique(np.stack([t[~singles], p[~singles]]), axis=1, return_counts=True)[1] / n
    true = np.bincount(t)[1:] / n
    pred = np.bincount(p[~singles])[1:] / n
    single = np.full(int(singles.sum()), 1.0 / n)
    return np.concatenate([pairs, single]), true[true > 0], np.concatenate([pred[pred > 0], single])


def _v_rand_at(pair: np.ndarray, true: np.ndarray, pred: np.ndarray) -> float:
    """Rand F-score (Arganda-Carreras et al. 2015, eq. 3 with alpha 0.5)."""
    return float(np.sum(pair**2) / (0.5 * np.sum(true**2) + 0.5 * np.sum(pred**2)))


def _v_info_at(pair: np.ndarray, true: np.ndarray, pred: np.ndarray) -> float:
    """Information-theoretic F-score (eq. 6 with alpha 0.5): mutual information over mean entropy."""

    def entropy(f: np.ndarray) -> float:
        return float(-np.sum(f * np.log(f)))

    h_true, h_pred = entropy(true), entropy(pred)
    mutual = h_true + h_pred - entropy(pair)
    mean = 0.5 * h_true + 0.5 * h_pred
    return 1.0 if mean == 0 else float(mutual / mean)


def _isbi_scores(prediction, target, thresholds) -> list[tuple[float, float]]:
    _same_shape(prediction, target)
    true_cells = _cells_after_thinning(_mask(np.squeeze(target), 0.5))
    probability = np.squeeze(np.asarray(prediction))
    scores = []
    for threshold in thresholds:
        membrane = probability if probability.dtype == bool else probability > threshold
        fractions = _joint_fractions(_cells_after_thinning(membrane), true_cells)
        scores.append((_v_rand_at(*fractions), _v_info_at(*fractions)))
        if probability.dtype == bool:
            break
    return scores


ISBI_THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(10))


def v_rand(prediction: np.ndarray, target: np.ndarray, *, thresholds=ISBI_THRESHOLDS) -> float:
    """The ISBI 2012 challenge's V_rand (higher is better): the foreground-restricted Rand F-score
    after thinning, maximal over the thresholds of the membrane probability.

    ``prediction``: membrane probability (or mask); ``target``: the true membrane mask. Membranes of
    both are thinned to 1 px, cells are their 4-connected complements; only pixels inside true cells
    count, and predicted membrane pixels there are singletons (Arganda-Carreras et al. 2015,
    Frontiers in Neuroanatomy 9:142; the challenge's Fiji script, ``RandError``/"after thinning").

    >>> truth = np.zeros((9, 9), bool); truth[:, 4] = True
    >>> v_rand(truth.astype(float), truth), round(v_rand(np.zeros((9, 9)), truth), 3)
    (1.0, 0.667)
    """
    return max(r for r, _ in _isbi_scores(prediction, target, thresholds))


def v_info(prediction: np.ndarray, target: np.ndarray, *, thresholds=ISBI_THRESHOLDS) -> float:
    """The ISBI 2012 challenge's V_info (higher is better): the foreground-restricted
    information-theoretic F-score after thinning, maximal over thresholds (see :func:`v_rand`).

    >>> truth = np.zeros((9, 9), bool); truth[:, 4] = True
    >>> v_info(truth.astype(float), truth), round(v_info(np.zeros((9, 9)), truth), 3)
    (1.0, 0.0)
    """
    return max(i for _, i in _isbi_scores(prediction, target, thresholds))


# -- restoration ------------------------------------------------------------------------------------


def _data_range(target: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        return float(data_range)
    value = float(np.max(target)) - float(np.min(target))
    if value <= 0:
        raise ValueError("the target is constant: give data_range explicitly")
    return value


def psnr(prediction: np.ndarray, target: np.ndarray, *, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB (higher is better); ``data_range`` defaults to the target's
    max - min. Identical images give ``inf``."""
    _same_shape(prediction, target)
    dr = _data_range(target, data_range)
    mse = float(np.mean((np.asarray(prediction, np.float64) - np.asarray(target, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(dr**2 / mse))


def ssim(prediction: np.ndarray, target: np.ndarray, *, data_range: float | None = None) -> float:
    """Structural similarity (scikit-image, 7x7 window) of two single-channel images (higher is better,
    at most 1)."""
    from skimage.metrics import structural_similarity

    _same_shape(prediction, target)
    dr = _data_range(target, data_range)
    return float(
        structural_similarity(
            np.asarray(target, np.float64), np.asarray(prediction, np.float64), data_range=dr
        )
    )


# -- counting and detection -------------------------------------------------------------------------


def count_mae(predicted: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error of per-image counts (lower is better)."""
    _same_shape(predicted, true)
    return float(np.mean(np.abs(np.asarray(predicted, np.float64) - np.asarray(true, np.float64))))


def count_relative_error(predicted: np.ndarray, true: np.ndarray) -> float:
    """Mean of ``|predicted - true| / true`` over images (lower is better); true counts must be > 0."""
    _same_shape(predicted, true)
    t = np.asarray(true, np.float64)
    if np.any(t <= 0):
        raise ValueError("count_relative_error needs true counts > 0 (use count_mae for empty images)")
    return float(np.mean(np.abs(np.asarray(predicted, np.float64) - t) / t))


def match_pairs(predicted: np.ndarray, true: np.ndarray, *, max_distance) -> list[tuple[int, int]]:
    """One-to-one pairs ``(i_predicted, j_true)`` of two point sets (``(n, ndim)`` coordinates) at most
    ``max_distance`` apart (one number, or one per true point), as many as possible and, among those,
    the closest (Hungarian assignment)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    if len(predicted) == 0 or len(true) == 0:
        return []
    p = np.asarray(predicted, np.float64).reshape(len(predicted), -1)
    t = np.asarray(true, np.float64).reshape(len(true), -1)
    distance = cdist(p, t)
    near = distance <= np.broadcast_to(np.asarray(max_distance, np.float64), (len(t),))[None, :]
    # a far pair costs more than all near pairs together: the matches are maximised first
    cost = np.where(near, distance / (distance.max() + 1.0), float(len(t) + 1))
    rows, cols = linear_sum_assignment(cost)
    return [(int(i), int(j)) for i, j in zip(rows, cols, strict=True) if near[i, j]]


def match_points(predicted: np.ndarray, true: np.ndarray, *, max_distance: float) -> int:
    """Number of one-to-one matches between two point sets at most ``max_distance`` apart, maximising
    the matches (:func:`match_pairs`)."""
    return len(match_pairs(predicted, true, max_distance=max_distance))


def detection_precision(predicted: np.ndarray, true: np.ndarray, *, max_distance: float) -> float:
    """Matched predictions / all predictions (1.0 when nothing is predicted and nothing is there)."""
    if len(predicted) == 0:
        return 1.0 if len(true) == 0 else 0.0
    return match_points(predicted, true, max_distance=max_distance) / len(predicted)


def detection_recall(predicted: np.ndarray, true: np.ndarray, *, max_distance: float) -> float:
    """Matched true points / all true points (1.0 when there is nothing to find and nothing found)."""
    if len(true) == 0:
        return 1.0 if len(predicted) == 0 else 0.0
    return match_points(predicted, true, max_distance=max_distance) / len(true)


def detection_f1(predicted: np.ndarray, true: np.ndarray, *, max_distance: float) -> float:
    """Harmonic mean of :func:`detection_precision` and :func:`detection_recall`."""
    if len(predicted) == 0 and len(true) == 0:
        return 1.0
    matched = match_points(predicted, true, max_distance=max_distance)
    return float(2 * matched / (len(predicted) + len(true)))


# -- metric names -----------------------------------------------------------------------------------

SHORT_NAME_MAX = 16  # bioimage.io's config.bioimageio.evaluations[].metrics: at most 16 characters
# short names that packages hold in config.bioimageio.evaluations -> the names used everywhere else
OLD_SHORT_NAMES = {
    "adapted_rand_err": "adapted_rand_error",
    "membrane_adapted": "membrane_adapted_rand_error",
    "count_relative_e": "count_relative_error",
    "detection_precis": "detection_precision",
}
_HIGHER = ("psnr", "ssim", "dice", "f1", "precision", "recall", "accuracy", "iou", "score")
_LOWER = ("error", "err", "mae", "mse", "rmse", "loss", "distance")


def short_names(names: list[str] | tuple[str, ...]) -> list[str]:
    """The names as bioimage.io's evaluation ``metrics`` field takes them: at most 16 characters,
    distinct; names that fit are kept as they are (the full name goes to ``metrics_long``).

    >>> short_names(["dice", "adapted_rand_error"])
    ['dice', 'adapted_rand_err']
    """
    out: list[str] = []
    for name in names:
        short = name[:SHORT_NAME_MAX]
        i = 2
        while short in out:
            tail = f"_{i}"
            short, i = name[: SHORT_NAME_MAX - len(tail)] + tail, i + 1
        out.append(short)
    return out


def full_name(short: str, long: str | None = None) -> str:
    """The metric name behind a short name of a package's ``config.bioimageio.evaluations``: its
    ``metrics_long`` entry when that is a name starting with ``short`` (not a description), else the
    known old short names, else ``short`` itself.

    >>> full_name("adapted_rand_err", "adapted_rand_error"), full_name("adapted_rand_err")
    ('adapted_rand_error', 'adapted_rand_error')
    >>> full_name("count_mae", "mean absolute error of the count")
    'count_mae'
    """
    if long:
        head = long.split(":", 1)[0].strip()
        if head.startswith(short) and head.replace("_", "").isalnum():
            return head
    return OLD_SHORT_NAMES.get(short, short)


def direction(name: str) -> str | None:
    """``"max"`` when a higher value of the metric ``name`` is better, ``"min"`` when lower is,
    ``None`` when the name does not say (judged by its words: ``psnr_mean`` -> max,
    ``count_rel_error`` -> min).

    >>> direction("psnr_s25"), direction("count_rel_error"), direction("mean_probability")
    ('max', 'min', None)
    """
    words = name.lower().replace("-", "_").split("_")
    if any(w in _LOWER for w in words):
        return "min"
    if any(w in _HIGHER for w in words):
        return "max"
    return None
