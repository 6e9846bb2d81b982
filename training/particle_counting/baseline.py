"""The classical baseline: Laplacian-of-Gaussian blob detection (``skimage.feature.blob_log``).

Each image is scaled between its 1st and 99.8th percentiles (as the network's input) and inverted
when it is bright-field (dark particles, :func:`data.is_bright_field`), so that particles are bright
blobs; every blob found is one particle, its centre the blob's position. The parameters in
``params.yaml`` were chosen on the **training split only** with :func:`tune`::

    python -m training.particle_counting.baseline ../shared/data/stem_nanoparticles
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

NAME = "LoG blobs (skimage blob_log, sigma {min_sigma:g}-{max_sigma:g} px, {which})"
# what tune() tries: absolute thresholds (on the 0-1 normalised image) and thresholds relative to the
# image's strongest LoG response (threshold_rel); sigma 2-30 px covers particles of 6-85 px
GRID = (
    {"threshold": 0.05, "threshold_rel": None},
    {"threshold": 0.08, "threshold_rel": None},
    {"threshold": 0.12, "threshold_rel": None},
    {"threshold": 0.2, "threshold_rel": None},
    {"threshold": 0.3, "threshold_rel": None},
    {"threshold": None, "threshold_rel": 0.1},
    {"threshold": None, "threshold_rel": 0.2},
)


def detect(
    image: np.ndarray,
    *,
    min_sigma: float,
    max_sigma: float,
    num_sigma: int = 10,
    threshold: float | None,
    threshold_rel: float | None = None,
    overlap: float = 0.5,
    percentile_low: float = 1.0,
    percentile_high: float = 99.8,
) -> np.ndarray:
    """Blob centres ``(n, 2)`` (y, x in px) of a raw 2D image."""
    from skimage.feature import blob_log

    from .data import is_bright_field, normalise

    x = np.clip(normalise(image, percentile_low, percentile_high), 0, 1)
    if is_bright_field(image):
        x = 1 - x
    blobs = blob_log(
        x,
        min_sigma=min_sigma,
        max_sigma=max_sigma,
        num_sigma=num_sigma,
        threshold=threshold,
        threshold_rel=threshold_rel,
        overlap=overlap,
    )
    return blobs[:, :2].astype(np.float64) if len(blobs) else np.zeros((0, 2))


def settings(params: dict) -> dict:
    """The baseline's keyword arguments from the use case parameters."""
    return {
        "min_sigma": params["baseline_min_sigma"],
        "max_sigma": params["baseline_max_sigma"],
        "num_sigma": params["baseline_num_sigma"],
        "threshold": params["baseline_threshold"] or None,
        "threshold_rel": params["baseline_threshold_rel"] or None,
        "overlap": params["baseline_overlap"],
        "percentile_low": params["percentile_low"],
        "percentile_high": params["percentile_high"],
    }


def describe(settings: dict) -> str:
    which = (
        f"threshold {settings['threshold']:g}"
        if settings.get("threshold")
        else f"threshold {settings['threshold_rel']:g} of the image's strongest response"
    )
    return NAME.format(min_sigma=settings["min_sigma"], max_sigma=settings["max_sigma"], which=which)


def tune(data_dir: Path, params: dict | None = None, grid=GRID) -> list[dict]:
    """Every setting of ``grid`` on the training split: mean F1 of the centres (match radius: half the
    image's median box size) and mean relative count error, best F1 first. F1 is the criterion: the
    count error alone prefers thresholds that find almost nothing (finding none scores 1.0, while a
    threshold that finds the particles plus the support's texture can score 10 or more)."""
    from emzoo import metrics as M

    from .data import load_raw, split

    params = params or {}
    names = split(data_dir)["train"]
    images = load_raw(data_dir, names)
    rows = []
    for setting in grid:
        start = time.perf_counter()
        rel, f1 = [], []
        for _, raw, boxes in images:
            found = detect(
                raw,
                min_sigma=2.0,
                max_sigma=30.0,
                **setting,
                percentile_low=params.get("percentile_low", 1.0),
                percentile_high=params.get("percentile_high", 99.8),
            )
            rel.append(abs(len(found) - len(boxes)) / len(boxes))
            f1.append(M.detection_f1(found, boxes.centres, max_distance=0.5 * float(np.median(boxes.sizes))))
        row = {
            **setting,
            "count_rel_error": float(np.mean(rel)),
            "f1": float(np.mean(f1)),
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(row, file=sys.stderr, flush=True)
        rows.append(row)
    return sorted(rows, key=lambda r: -r["f1"])


if __name__ == "__main__":
    chosen = [GRID[int(i)] for i in sys.argv[2:]] or GRID  # optional: indices into GRID
    for r in tune(Path(sys.argv[1]), grid=chosen):
        print(r)
