"""The features the out-of-distribution check compares: cheap statistics of the raw input and of the
model's outputs, for any package (ONNX, TorchScript or PyTorch) run by emzoo's runtime.

Every feature is computed on one central plane of at most :data:`CROP` x :data:`CROP` pixels (the
middle z slice of a volume, channels averaged), so the check costs a few milliseconds per image.
Intensity percentiles in std units are left out on purpose: many EM modalities share them once
normalised; only the histogram's shape enters, with the rest. Every log is bounded (at 1 % of the
reference value), so that a flat or saturated region cannot give a feature an unbounded value.

* noise: the noise level relative to the image's spread (the mean absolute diagonal wavelet
  coefficient; the median, as ``skimage.restoration.estimate_sigma`` takes it, is 0 on smooth
  8-bit images), the correlation of neighbouring pixel differences along x and along y (-0.5 for
  white noise; scan-line, interpolated and compressed noise differ, and differ between the two
  directions);
* texture: how unevenly the local contrast is spread (the 90th and 10th percentiles of the standard
  deviation in 8 x 8 and 32 x 32 pixel blocks, relative to its median: particles on a flat support
  vs tissue textured everywhere vs noise everywhere);
* power spectrum: its slope between neighbouring octaves of spatial frequency (structures of 2-4,
  4-8, 8-16 and 16-32 px; 0 for white noise, about 2-4 for smooth structure): how the image's
  contrast is shared between fine scales, which the imaging mode and its noise set;
* band sparsity: how heavy-tailed the bands of a Laplacian pyramid are at 1-2, 2-4 and 4-8 px
  (Gaussian for noise, heavy-tailed where particles, membranes or edges carry the contrast);
* histogram shape: the asymmetry of the intensities (bright particles on a dark support, dark ones
  on a bright support, or symmetric) and the weight of their tails relative to their spread;
* outputs, per output tensor, in the same window: its low values (1st percentile; density maps go
  negative where the model is confused), its correlation with the input, and how concentrated its
  mass is (the share of its positive values in its top 5 % pixels: a density map of real particles
  concentrates its mass in blobs, "no confident detection" spreads it), and for probabilities
  (a sigmoid or softmax at the end) the share of confident pixels (below 0.1 or above 0.9).

>>> from emzoo.io.meta import Image, ImageMeta
>>> rng = np.random.default_rng(0)
>>> f = image_features(Image(rng.normal(100, 10, (128, 128)), ImageMeta(axes="yx")))
>>> round(f["corr_x"], 1), round(f["corr_y"], 1)  # white noise: differences anti-correlated
(-0.5, -0.5)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from emzoo.io.meta import Image

CROP = 512  # features look at a central plane of at most this many pixels per axis


@dataclass(frozen=True)
class Feature:
    """One feature: its name in ``config.emzoo.ood``, what it is in words, and the smallest spread
    used to standardise it (so that a feature nearly constant over the training images does not
    turn a tiny difference into a warning)."""

    name: str
    words: str
    floor: float


OCTAVES = 3  # spectra up to 32 px, bands up to 8 px: coarser octaves vary too much between crops
IMAGE_FEATURES = (
    Feature("noise", "its noise level (log10, relative to its spread)", 0.05),
    Feature("corr_x", "the correlation of its noise along x", 0.03),
    Feature("corr_y", "the correlation of its noise along y", 0.03),
    Feature(
        "texture8_high",
        "its most textured 8-px blocks (log10 of the 90th/50th percentile of block contrast)",
        0.02,
    ),
    Feature(
        "texture8_low", "its flattest 8-px blocks (log10 of the 10th/50th percentile of block contrast)", 0.02
    ),
    Feature("texture32_high", "its most textured 32-px blocks (log10 of the 90th/50th percentile)", 0.02),
    Feature("texture32_low", "its flattest 32-px blocks (log10 of the 10th/50th percentile)", 0.02),
    *(
        Feature(
            f"spectrum{2**k}px",
            f"the slope of its power spectrum between structures of {2**k}-{2 ** (k + 1)} px and "
            f"{2 ** (k + 1)}-{2 ** (k + 2)} px (log2 of the power ratio)",
            0.5,
        )
        for k in range(1, OCTAVES + 1)
    ),
    *(
        Feature(
            f"sparsity{2**k}px",
            f"how heavy-tailed its contrast at {2**k}-{2 ** (k + 1)} px is (log10 of the 0.5-99.5 % range "
            "over the interquartile range of that band; 0.58 for noise)",
            0.05,
        )
        for k in range(OCTAVES)
    ),
    Feature("asymmetry", "the asymmetry of its intensities ((p95 + p5 - 2 median) / (p95 - p5))", 0.02),
    Feature(
        "tails", "the weight of its intensity tails (log10 of (p99.5 - p0.5) / interquartile range)", 0.02
    ),
)
SAMPLES = 16384  # the band values a quantile reads, at most
GAUSSIAN_TAILS = 0.582  # log10((p99.5 - p0.5) / interquartile range) of a Gaussian
FLOOR = 0.01  # logs of ratios are bounded below at this share of the reference value
CONFIDENT = 0.1  # a probability below this or above 1 - this is confident
TOP = 0.05  # the concentration of an output: the share of its positive mass in this top share of pixels


def window(shape: tuple[int, ...], axes: str, crop: int | None = CROP) -> tuple[Any, ...]:
    """The index of the central plane: middle z/t slice, central ``crop`` pixels along y and x (all
    of them for ``crop`` None)."""
    index: list[Any] = []
    for letter, n in zip(axes, shape, strict=True):
        if letter in "yx" and crop is not None and n > crop:
            start = (n - crop) // 2
            index.append(slice(start, start + crop))
        elif letter in "zt":
            index.append(n // 2)
        else:
            index.append(slice(None))
    return tuple(index)


def plane(image: Image, crop: int | None = CROP) -> np.ndarray:
    """The central plane of ``image`` as float64 ``(y, x)`` (channels averaged), cut to the central
    ``crop`` pixels per axis (the whole plane for ``crop`` None)."""
    axes = image.meta.axes
    data = np.asarray(image.data[window(image.shape, axes, crop)], dtype=np.float64)
    kept = [a for a in axes if a not in "zt"]
    if "c" in kept:
        data = data.mean(axis=kept.index("c"))
        kept.remove("c")
    if data.ndim != 2:  # a 1D profile or an image without y/x: nothing comparable
        return np.zeros((0, 0))
    return data if kept == ["y", "x"] else data.T


def image_features(image: Image) -> dict[str, float]:
    """The features of :data:`IMAGE_FEATURES` of one raw input image ({} when it is constant or
    smaller than 32 x 32 pixels: see :class:`emzoo.tasks.ood.Check`)."""
    a = plane(image)
    if min(a.shape) < 32 or not np.isfinite(a).all():
        return {}
    a = (a - np.median(a[::4, ::4])).astype(np.float32)  # centred: float32 keeps the small differences
    p = np.quantile(a[::2, ::2], (0.005, 0.05, 0.25, 0.5, 0.75, 0.95, 0.995))  # every 4th pixel
    spread = float(p[4] - p[2]) or float(a.std()) * 1.349
    if spread <= 0:
        return {}
    h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
    b = a[:h, :w]
    diagonal = (b[0::2, 0::2] - b[0::2, 1::2] - b[1::2, 0::2] + b[1::2, 1::2]) / 2
    # the mean, not the median, of |diagonal|: quantised smooth images have a median of 0
    sigma = float(np.mean(np.abs(diagonal))) * np.sqrt(np.pi / 2)
    found = {
        "noise": float(np.log10(sigma / (spread / 1.349) + 0.3 * FLOOR)),
        "corr_x": _difference_correlation(a, 1),
        "corr_y": _difference_correlation(a, 0),
    }
    for size in (8, 32):
        low, mid, high = np.quantile(_block_contrast(a, size), (0.1, 0.5, 0.9))
        mid = max(float(mid), 1e-9 * spread)
        found[f"texture{size}_high"] = float(np.log10((high + FLOOR * mid) / mid))
        found[f"texture{size}_low"] = float(np.log10((low + FLOOR * mid) / mid))
    found |= _spectrum_slopes(a) | _band_sparsity(a)
    wide = float(p[5] - p[1])
    found["asymmetry"] = float((p[5] + p[1] - 2 * p[3]) / wide) if wide > 0 else 0.0
    found["tails"] = float(np.log10(max(float(p[6] - p[0]), spread) / spread))
    return found


def _spectrum_slopes(a: np.ndarray) -> dict[str, float]:
    """The log2 ratio of the mean power in neighbouring octaves of spatial frequency (the spectrum's
    slope: 0 for white noise, 2 for 1/f^2); a Hann window keeps the crop's edges out of it."""
    from scipy import fft

    taper, octave, count = _octaves(a.shape)
    power = np.abs(fft.rfft2((a - a.mean()).astype(np.float32) * taper)) ** 2
    total = np.bincount(octave, power.ravel(), minlength=8)[:7]
    level = np.log2(total / np.maximum(count, 1) + 1e-30)
    return {
        f"spectrum{2**k}px": float(level[k] - level[k - 1]) if count[k] and count[k - 1] else 0.0
        for k in range(1, OCTAVES + 1)
    }


@functools.lru_cache(maxsize=8)
def _octaves(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a crop of ``shape``: its Hann taper, the octave of every rfft2 frequency (0: 0.25-0.5
    cycles/px, structures of 2-4 px; 7: outside 0 < f < 0.5) and the count of frequencies per octave."""
    h, w = shape
    taper = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    f = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]).ravel()
    inside = (f > 0) & (f < 0.5)
    octave = np.full(f.size, 7)
    octave[inside] = np.minimum(np.floor(-np.log2(f[inside] / 0.5)), 7).astype(int)
    return taper, octave, np.bincount(octave, minlength=8)[:7]


def _band_sparsity(a: np.ndarray) -> dict[str, float]:
    """The tail weight of a Laplacian pyramid's bands (each level minus its 2 x 2 block means): heavy
    tails where compact structures (particles, membranes, edges) carry that scale's contrast, 0.58
    (Gaussian) where noise does. Levels of at least 8 x 8 pixels; smaller ones read as noise."""
    found: dict[str, float] = {}
    level = a.astype(np.float32)
    for k in range(OCTAVES):
        h, w = level.shape[0] // 2 * 2, level.shape[1] // 2 * 2
        name = f"sparsity{2**k}px"
        if min(h, w) < 8:
            found[name] = GAUSSIAN_TAILS
            continue
        level = level[:h, :w]
        coarse = (level[0::2, 0::2] + level[0::2, 1::2] + level[1::2, 0::2] + level[1::2, 1::2]) / 4
        band = (level[0::2, 0::2] - coarse).ravel()  # one pixel of each block: the band's values
        step = max(1, band.size // SAMPLES)
        lo, q1, q3, hi = np.quantile(band[::step], (0.005, 0.25, 0.75, 0.995))
        iqr = float(q3 - q1)
        found[name] = float(np.log10(max(float(hi - lo), iqr) / iqr)) if iqr > 0 else GAUSSIAN_TAILS
        level = coarse
    return found


def _block_contrast(a: np.ndarray, size: int) -> np.ndarray:
    """The standard deviation of every ``size`` x ``size`` block."""
    h, w = a.shape[0] // size * size, a.shape[1] // size * size
    return a[:h, :w].reshape(h // size, size, w // size, size).std(axis=(1, 3)).ravel()


def _difference_correlation(a: np.ndarray, axis: int) -> float:
    """Lag-1 correlation of neighbouring differences along ``axis``: -0.5 for white noise, towards +1
    for smooth structure or correlated noise. Every other line across ``axis`` is enough."""
    lines = a[::2] if axis == 1 else a[:, ::2]
    d = np.diff(lines.astype(np.float32), axis=axis)
    d = d - d.mean(dtype=np.float64)
    var = float(np.mean(d * d))
    if var == 0:
        return 0.0
    head = d[:, :-1] if axis == 1 else d[:-1]
    tail = d[:, 1:] if axis == 1 else d[1:]
    return float(np.mean(head * tail) / var)


def output_features_of(spec) -> tuple[Feature, ...]:
    """The output features a package's outputs give (their names start with the output's id)."""
    from emzoo.drivers.outputs import is_probability

    found: list[Feature] = []
    for t in spec.outputs:
        if t.spatial_axes:
            if is_probability(t):
                found.append(Feature(f"{t.id}.confident", f"the share of confident {t.id!r} pixels", 0.01))
            found += [
                Feature(f"{t.id}.p1", f"the low values (1st percentile) of its {t.id!r} output", 1e-6),
                Feature(f"{t.id}.corr_in", f"the correlation of its {t.id!r} output with the input", 0.02),
                Feature(
                    f"{t.id}.concentration",
                    f"the share of its {t.id!r} output's mass in its top {TOP:.0%} pixels",
                    0.01,
                ),
            ]
    return tuple(found)


def output_features(spec, image: Image, outputs: Mapping[str, Image]) -> dict[str, float]:
    """The output features (:func:`output_features_of`) of one prediction of ``image``."""
    names = {f.name for f in output_features_of(spec)}
    source = plane(image)
    found: dict[str, float] = {}
    for tid, out in outputs.items():
        if f"{tid}.p1" not in names:
            continue
        values = np.asarray(out.data[window(out.shape, out.meta.axes)], dtype=np.float32)
        if values.size == 0 or not np.isfinite(values).all():
            continue
        first = values[0] if values.ndim == 3 and "c" in out.meta.axes else values
        if first.ndim != 2:
            continue
        values = values[..., ::2, ::2].ravel()  # every 4th pixel: statistics of the values
        positive = np.clip(values, 0, None)
        k = max(1, int(TOP * positive.size))
        total = float(positive.sum(dtype=np.float64))
        top = float(np.partition(positive, positive.size - k)[-k:].sum(dtype=np.float64))
        found |= {
            f"{tid}.p1": float(np.quantile(values, 0.01)),
            f"{tid}.corr_in": _correlation(first[::2, ::2], source[::2, ::2]),
            f"{tid}.concentration": top / total if total > 0 else 1.0,
        }
        if f"{tid}.confident" in names:
            found[f"{tid}.confident"] = float(np.mean((values < CONFIDENT) | (values > 1 - CONFIDENT)))
    return found


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape or a.size < 2:
        return 0.0
    a, b = a - a.mean(dtype=np.float64), b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 0 else 0.0
