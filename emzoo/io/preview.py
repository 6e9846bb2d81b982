"""8-bit pictures of float images, for any viewer: ``emzoo predict --preview`` and PNG outputs of float
tensors (``--output-format png``) go through :func:`preview_pixels`, the one rule.

* **Probabilities** (every value within 0..1, or ``probability=True`` for an output whose package ends
  in a sigmoid or softmax) map linearly: 0 -> 0, 0.5 -> 128, 1 -> 255.
* **Other images** are stretched between their 0.5 and 99.5 percentiles (finite values only).
* **Volumes** (a ``z``, ``t`` or any axis besides ``y``, ``x`` and ``c``): their middle slice.
* **Channels** (``c``): side by side in one near-square grid, channel 0 top left, row by row; each
  channel stretched on its own (probabilities: the one linear map).
* ``max_side``: a larger picture keeps every n-th pixel (the smallest n that fits).

>>> preview_pixels(np.array([[0.0, 0.5], [0.25, 1.0]]), "yx").tolist()
[[0, 128], [64, 255]]
>>> stretched = preview_pixels(np.arange(1000.0).reshape(10, 100), "yx")
>>> int(stretched.min()), int(stretched.max()), stretched.dtype.name
(0, 255, 'uint8')
>>> preview_pixels(np.zeros((3, 4, 5, 6)), "czyx").shape  # middle z slice; 3 channels in a 2x2 grid
(10, 12)
"""

from __future__ import annotations

import math

import numpy as np

LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5


def is_probability(values: np.ndarray) -> bool:
    """Are all finite values within 0..1 (and some finite)?

    >>> is_probability(np.array([0.0, 0.3, 1.0])), is_probability(np.array([-0.1, 0.5]))
    (True, False)
    """
    finite = values[np.isfinite(values)]
    return bool(finite.size) and float(finite.min()) >= 0.0 and float(finite.max()) <= 1.0


def to_uint8(values: np.ndarray, *, probability: bool) -> np.ndarray:
    """One channel (any shape) as uint8: linear 0..1 for probabilities, else a percentile stretch;
    NaN shows as 0.

    >>> to_uint8(np.array([0.0, 0.5, 2.0, np.nan]), probability=True).tolist()
    [0, 128, 255, 0]
    """
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    if probability:
        lo, hi = 0.0, 1.0
    elif finite.any():
        lo, hi = (float(p) for p in np.percentile(v[finite], [LOW_PERCENTILE, HIGH_PERCENTILE]))
    else:
        lo, hi = 0.0, 1.0
    scaled = (np.where(finite, v, lo) - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def _picked(data, axes: str, max_side: int | None) -> tuple[np.ndarray, bool]:
    """The array read as ``(channels, y, x)``: the middle of every other axis, every n-th pixel where
    ``max_side`` asks (lazy arrays read only that); and whether it has a channel axis."""
    shape = tuple(int(n) for n in data.shape)
    if len(shape) < 2:
        raise ValueError(f"a picture needs two spatial axes, got shape {shape}")
    if len(axes) != len(shape) or not {"y", "x"} <= set(axes):  # unknown axes: the last two are y, x
        axes = "t" * (len(shape) - 2) + "yx"
    step = 1
    if max_side is not None:
        step = max(1, math.ceil(max(shape[axes.index("y")], shape[axes.index("x")]) / max_side))
    index = tuple(
        slice(None, None, step) if a in "yx" else slice(None) if a == "c" else shape[i] // 2
        for i, a in enumerate(axes)
    )
    kept = [a for a in axes if a in "cyx"]
    arr = np.asarray(data[index])
    arr = np.transpose(arr, [kept.index(a) for a in "cyx" if a in kept])
    return (arr if "c" in kept else arr[None]), "c" in kept


def _grid(channels: list[np.ndarray]) -> np.ndarray:
    """Channels side by side in a near-square grid (row by row), the gaps 0."""
    n = len(channels)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = channels[0].shape
    out = np.zeros((rows * h, cols * w), np.uint8)
    for k, c in enumerate(channels):
        r, q = divmod(k, cols)
        out[r * h : (r + 1) * h, q * w : (q + 1) * w] = c
    return out


def preview_pixels(
    data, axes: str, *, probability: bool | None = None, max_side: int | None = None
) -> np.ndarray:
    """A 2D uint8 picture of a float image with ``axes`` (see the module docstring); ``probability``
    None: decided from the values (all within 0..1)."""
    arr, _ = _picked(data, axes, max_side)
    arr = arr.astype(np.float32, copy=False)
    if probability is None:
        probability = is_probability(arr)
    return _grid([to_uint8(c, probability=probability) for c in arr])
