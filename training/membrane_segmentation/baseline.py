"""The classical baseline: Gaussian smoothing, then Otsu's threshold (membranes are the dark class)."""

from __future__ import annotations

import numpy as np

NAME = "Gaussian smoothing (sigma {sigma:g} px) + Otsu threshold"


def membrane_mask(image: np.ndarray, *, sigma: float = 2.0) -> np.ndarray:
    """Membrane mask (float32 0/1, the shape of ``image``) of a raw ssTEM image (any axes)."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    x = np.asarray(image, np.float64)
    smooth = ndimage.gaussian_filter(np.squeeze(x), sigma) if sigma > 0 else np.squeeze(x)
    return (smooth <= threshold_otsu(smooth)).astype(np.float32).reshape(x.shape)
