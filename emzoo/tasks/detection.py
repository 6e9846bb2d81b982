"""How well a counting model finds particles: labels as YOLO boxes or point CSVs, one-to-one matching
of centres, precision, recall, F1, count error and box AP@0.5.

A predicted centre matches a labelled particle when it lies within half the particle's smaller box
side (for point labels: half their ``diameter_px`` column, else ``default_radius_px``); the pairs are
chosen one-to-one to maximise the matches (:func:`emzoo.metrics.match_pairs`). Box AP@0.5 follows the
PASCAL VOC / COCO rule: predictions sorted by score, each matched greedily to the unmatched label of
highest IoU >= 0.5, precision interpolated over all recall points.

>>> import numpy as np
>>> truth = Particles(np.array([[10.0, 10.0], [30.0, 40.0]]), sizes=np.array([[8.0, 8.0], [6.0, 6.0]]))
>>> found = np.array([[11.0, 9.0, 0.9], [50.0, 50.0, 0.5]])
>>> scores = detection_scores(found, truth, diameters=np.array([8.0, 4.0]))
>>> scores["precision"], scores["recall"], scores["f1"], scores["box_ap50"]
(0.5, 0.5, 0.5, 0.5)
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emzoo.errors import InputError
from emzoo.metrics import match_pairs

__all__ = ["Particles", "box_ap50", "detection_scores", "read_particle_labels"]

DEFAULT_RADIUS_PX = 5.0
_Y_NAMES, _X_NAMES = ("y", "axis-0", "row"), ("x", "axis-1", "col", "column")
_DIAMETER_NAMES = ("diameter_px", "diameter", "size")


@dataclass(frozen=True)
class Particles:
    """Labelled particles of one image in pixels: ``centres`` ``(n, 2)`` as (y, x) and, for box
    labels, ``sizes`` ``(n, 2)`` as (height, width); ``radii`` are the match radii."""

    centres: np.ndarray
    sizes: np.ndarray | None = None
    radii: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.centres)

    def match_radii(self, default: float = DEFAULT_RADIUS_PX) -> np.ndarray:
        """Half the smaller box side per particle (at least 1 px); ``default`` without sizes."""
        if self.radii is not None:
            return self.radii
        if self.sizes is None:
            return np.full(len(self), float(default))
        return np.maximum(self.sizes.min(axis=1) / 2, 1.0)


def _yolo(path: Path, shape: tuple[int, int]) -> Particles:
    """``class cx cy w h`` per line, normalised to the image's width and height (a 6th field, a
    confidence, is allowed)."""
    height, width = shape
    centres, sizes = [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields[1:5]]
        except ValueError:
            values = []
        if len(fields) not in (5, 6) or len(values) != 4 or not np.all(np.isfinite(values)):
            raise InputError(
                f"{path}, line {number}: not a YOLO box ('class cx cy w h', normalised): {line[:60]!r}"
            )
        cx, cy, w, h = values
        centres.append((cy * height - 0.5, cx * width - 0.5))
        sizes.append((h * height, w * width))
    return Particles(np.reshape(centres, (-1, 2)).astype(float), np.reshape(sizes, (-1, 2)).astype(float))


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    return next((lowered.index(n) for n in names if n in lowered), None)


def _points_csv(path: Path) -> Particles:
    """A CSV with a header naming ``y`` and ``x`` (or napari's ``axis-0``/``axis-1``) columns and,
    optionally, ``diameter_px``."""
    with open(path, newline="", errors="replace") as f:
        rows = list(csv.reader(f))
    header = rows[0] if rows else []
    iy, ix, idiam = _column(header, _Y_NAMES), _column(header, _X_NAMES), _column(header, _DIAMETER_NAMES)
    if iy is None or ix is None:
        raise InputError(
            f"{path}: a point-label CSV needs a header with 'y' and 'x' columns (found: {', '.join(header)})"
        )
    centres, diameters = [], []
    for number, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            centres.append((float(row[iy]), float(row[ix])))
            if idiam is not None:
                diameters.append(float(row[idiam]))
        except (ValueError, IndexError):
            raise InputError(f"{path}, line {number}: not a point 'y, x': {','.join(row)[:60]!r}") from None
    points = np.reshape(centres, (-1, 2)).astype(float)
    if idiam is None:
        return Particles(points)
    d = np.asarray(diameters, float)
    return Particles(points, sizes=np.stack([d, d], axis=1), radii=np.maximum(d / 2, 1.0))


def read_particle_labels(path: str | Path, image_shape: tuple[int, ...]) -> Particles:
    """The particles of one label file: YOLO boxes (``.txt``) or points (``.csv``); every problem is one
    :class:`~emzoo.errors.InputError` naming the file."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".txt":
            return _yolo(path, (int(image_shape[-2]), int(image_shape[-1])))
        if suffix == ".csv":
            return _points_csv(path)
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror or e})") from None
    raise InputError(
        f"{path}: particle labels must be YOLO boxes (.txt: 'class cx cy w h' per line) or a CSV of "
        "points with 'y' and 'x' columns (.csv)"
    )


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(y0, x0, y1, x1)`` box with many."""
    y0, x0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    y1, x1 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def _boxes(centres: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    half = np.asarray(sizes, float) / 2
    c = np.asarray(centres, float)[:, :2]
    return np.concatenate([c - half, c + half], axis=1)


def box_ap50(predicted: np.ndarray, scores: np.ndarray, sizes: np.ndarray, truth: Particles) -> float:
    """Box average precision at IoU 0.5 (all-point interpolation) of square or rectangular boxes:
    ``predicted`` centres ``(n, 2)``, ``scores`` ``(n,)``, ``sizes`` ``(n, 2)`` (height, width)."""
    if truth.sizes is None:
        raise InputError("box AP needs box labels (YOLO .txt or a CSV with a diameter_px column)")
    if len(truth) == 0:
        return 1.0 if len(predicted) == 0 else 0.0
    if len(predicted) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    pred_boxes, true_boxes = _boxes(predicted, sizes)[order], _boxes(truth.centres, truth.sizes)
    taken = np.zeros(len(truth), bool)
    hit = np.zeros(len(order), bool)
    for k, box in enumerate(pred_boxes):
        iou = np.where(taken, -1.0, _iou(box, true_boxes))
        j = int(np.argmax(iou))
        if iou[j] >= 0.5:
            taken[j] = hit[k] = True
    tp = np.cumsum(hit)
    recall = np.concatenate([[0.0], tp / len(truth)])
    precision = np.concatenate([[1.0], tp / np.arange(1, len(order) + 1)])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the interpolated envelope
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def detection_scores(
    found: np.ndarray,
    truth: Particles,
    *,
    diameters: np.ndarray | None = None,
    default_radius_px: float = DEFAULT_RADIUS_PX,
) -> dict[str, float]:
    """Precision, recall, F1, counts and the relative count error of one image, and ``box_ap50`` when
    the model gives ``diameters`` (one per row of ``found``: ``y, x, score``) and the labels are boxes."""
    found = np.asarray(found, float)
    found = found.reshape(0, 3) if found.size == 0 else found
    pairs = match_pairs(found[:, :2], truth.centres, max_distance=truth.match_radii(default_radius_px))
    n_found, n_true, matched = len(found), len(truth), len(pairs)
    precision = matched / n_found if n_found else float(n_true == 0)
    recall = matched / n_true if n_true else float(n_found == 0)
    f1 = 2 * matched / (n_found + n_true) if n_found + n_true else 1.0
    scores = {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "count": float(n_found),
        "true_count": float(n_true),
        "count_rel_error": abs(n_found - n_true) / max(n_true, 1),
    }
    if diameters is not None and truth.sizes is not None:
        d = np.asarray(diameters, float)
        scores["box_ap50"] = box_ap50(found[:, :2], found[:, 2], np.stack([d, d], axis=1), truth)
    return scores
