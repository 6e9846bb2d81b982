"""Classical baselines on the SEM evaluation images: a Gaussian filter and non-local means.

- Non-local means (``skimage.restoration.denoise_nl_means``, fast mode, 5x5 patches, search
  distance 6) with the strength ``h = k * sigma_hat``, where ``sigma_hat`` is a robust estimate of
  the noise of the image itself (:func:`noise_sigma`: no clean image needed) and ``k`` is chosen
  on one noisy draw that is not scored (``data.TUNING_DRAW``), against the clean image.
- Gaussian filter: its width is chosen per noise level against the clean image (the best of a
  grid): an *oracle* setting, so its numbers are an upper bound for this filter.
"""

from __future__ import annotations

import numpy as np

NLM_FACTORS = (0.4, 0.5, 0.6, 0.8, 1.0, 1.2)
GAUSSIAN_SIGMAS = (0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
NLM_NAME = "non-local means (h = {k:g} x estimated noise sigma, 5x5 patches, distance 6)"
GAUSSIAN_NAME = "Gaussian filter (sigma chosen per noise level on the clean image: oracle)"


def noise_sigma(image: np.ndarray) -> float:
    """Donoho's robust noise estimate from the finest diagonal Haar wavelet coefficients,
    ``median(|HH|) / 0.6745`` (what ``skimage.restoration.estimate_sigma`` computes with a db2 wavelet,
    without needing PyWavelets). For independent noise of std ``s``, ``HH`` has std ``s``."""
    x = np.asarray(image, np.float64)
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    a, b, c, d = x[0:h:2, 0:w:2], x[0:h:2, 1:w:2], x[1:h:2, 0:w:2], x[1:h:2, 1:w:2]
    return float(np.median(np.abs(a - b - c + d) / 2) / 0.6745)


def nlm(noisy: np.ndarray, k: float) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    x = np.asarray(noisy, np.float64)
    sigma = noise_sigma(x)
    return denoise_nl_means(x, h=k * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6)


def gaussian(noisy: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(np.asarray(noisy, np.float64), sigma, mode="reflect")


def best(candidates, denoise, noisy: np.ndarray, clean: np.ndarray, score) -> tuple[float, float]:
    """The candidate parameter with the highest ``score(denoise(noisy, c), clean)``, and that score."""
    scored = [(score(denoise(noisy, c), clean), c) for c in candidates]
    value, choice = max(scored)
    return choice, value
