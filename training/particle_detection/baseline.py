"""The classical baselines, with sizes: Laplacian-of-Gaussian blobs (the settings of the
``particle_counting`` baseline, tuned on the training split) and Otsu threshold + connected components.

Both scale the image between its percentiles and invert bright-field images (dark particles), as
``particle_counting.baseline`` does. Each returns ``(centres, diameters)``: ``centres`` ``(n, 3)`` rows
``y, x, score`` (for box AP) and diameters in px.
"""

from __future__ import annotations

import numpy as np

from .shared import counting_baseline, counting_data


def _prepared(image: np.ndarray, low: float, high: float) -> np.ndarray:
    pc = counting_data()
    x = np.clip(pc.normalise(image, low, high), 0, 1)
    return 1 - x if pc.is_bright_field(image) else x


def log_blobs(image: np.ndarray, settings: dict) -> tuple[np.ndarray, np.ndarray]:
    """LoG blobs (``skimage.feature.blob_log``): centre, score = the image value there, diameter =
    2 sqrt(2) sigma."""
    from skimage.feature import blob_log

    s = dict(settings)
    x = _prepared(image, s.pop("percentile_low"), s.pop("percentile_high"))
    blobs = blob_log(x, **s)
    if not len(blobs):
        return np.zeros((0, 3)), np.zeros(0)
    yx = blobs[:, :2]
    score = x[tuple(np.clip(yx.round().astype(int), 0, np.array(x.shape) - 1).T)]
    return np.column_stack([yx, score]), 2 * np.sqrt(2) * blobs[:, 2]


def otsu_components(image: np.ndarray, *, smooth_sigma: float, min_area: int, low: float, high: float):
    """Otsu's threshold of the smoothed image, connected components of at least ``min_area`` px:
    centre = centroid, diameter = equivalent diameter, score = mean value of the component."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu
    from skimage.measure import regionprops

    x = _prepared(image, low, high)
    if smooth_sigma > 0:
        x = ndimage.gaussian_filter(x, smooth_sigma)
    labels, _ = ndimage.label(x > threshold_otsu(x))
    rows, diameters = [], []
    for region in regionprops(labels, intensity_image=x):
        if region.area >= min_area:
            rows.append([*region.centroid, float(region.intensity_mean)])
            diameters.append(float(region.equivalent_diameter_area))
    if not rows:
        return np.zeros((0, 3)), np.zeros(0)
    return np.array(rows, float), np.array(diameters, float)


def log_settings(params: dict) -> dict:
    """The LoG baseline's keyword arguments (``particle_counting.baseline.settings``)."""
    return counting_baseline().settings(params)


def describe_log(settings: dict) -> str:
    return counting_baseline().describe(settings)


def describe_otsu(params: dict) -> str:
    return (
        f"Otsu threshold (after Gaussian smoothing sigma {params['otsu_smooth_sigma']:g} px) + connected "
        f"components of at least {params['otsu_min_area']} px: centroids, equivalent diameters"
    )
