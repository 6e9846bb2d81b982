"""Data augmentation on numpy arrays, applied identically to an image and its label.

Arrays have a leading channel axis followed by the spatial axes (``cyx`` or ``czyx``); image and
label share the spatial shape (their channel counts may differ). Geometric changes (crop, flips,
90-degree rotations in the yx plane, elastic deformation) are drawn once and applied to both;
intensity jitter changes the image only, unless ``jitter_label`` is set (image-to-image tasks such
as denoising). All draws come from the ``numpy.random.Generator`` passed in, so a seeded generator
reproduces the sample.

>>> import numpy as np
>>> aug = Augmentation(crop=(4, 4), intensity=0.1)
>>> x, y = aug(np.zeros((1, 8, 8), np.float32), np.zeros((1, 8, 8), np.float32), np.random.default_rng(0))
>>> x.shape, y.shape
((1, 4, 4), (1, 4, 4))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def random_crop(
    image: np.ndarray, label: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The same random window of spatial ``shape`` from both arrays."""
    spatial = image.shape[1:]
    if len(shape) != len(spatial) or any(c > s for c, s in zip(shape, spatial, strict=True)):
        raise ValueError(f"crop {tuple(shape)} does not fit in an image of spatial shape {spatial}")
    starts = [int(rng.integers(0, s - c + 1)) for c, s in zip(shape, spatial, strict=True)]
    window = (slice(None), *(slice(a, a + c) for a, c in zip(starts, shape, strict=True)))
    return image[window], label[window]


def random_flips(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror each spatial axis with probability 1/2."""
    for axis in range(1, image.ndim):
        if rng.random() < 0.5:
            image, label = np.flip(image, axis), np.flip(label, axis)
    return image, label


def random_rot90(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate the yx plane by a random multiple of 90 degrees (only 0 or 180 if it is not square)."""
    square = image.shape[-1] == image.shape[-2]
    k = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
    return np.rot90(image, k, axes=(-2, -1)), np.rot90(label, k, axes=(-2, -1))


def intensity_jitter(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """``image * (1 + a) + b`` with ``a``, ``b`` uniform in ``[-amount, amount]`` (contrast and
    brightness; meant for normalised images, where 1 is one standard deviation)."""
    gain = 1.0 + rng.uniform(-amount, amount)
    offset = rng.uniform(-amount, amount)
    return (image * np.asarray(gain, image.dtype) + np.asarray(offset, image.dtype)).astype(image.dtype)


def elastic_deform(
    image: np.ndarray, label: np.ndarray, std: float, rng: np.random.Generator, *, grid: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """The U-Net paper's elastic deformation (Ronneberger et al. 2015): random displacements of
    ``std`` pixels on a coarse ``grid`` x ``grid`` of control points in the yx plane, interpolated
    to every pixel by a cubic spline; the image is resampled with cubic interpolation, the label
    with nearest neighbours (so label values stay valid). Mirror padding at the borders.

    scipy has the pieces (``zoom``, ``map_coordinates``) but no elastic transform, so it is put
    together here.

    >>> x = np.arange(64, dtype=np.float32).reshape(1, 8, 8)
    >>> a, b = elastic_deform(x, x > 30, 0.0, np.random.default_rng(0))
    >>> bool(np.allclose(a, x)), bool((b == (x > 30)).all())
    (True, True)
    """
    from scipy import ndimage

    height, width = image.shape[-2:]
    control = rng.normal(0.0, std, (2, grid, grid))
    zoom = (height / grid, width / grid)
    shift = [ndimage.zoom(c, zoom, order=3, mode="nearest", grid_mode=True)[:height, :width] for c in control]
    yy, xx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    coords = np.stack([yy + shift[0], xx + shift[1]])

    def warp(array: np.ndarray, order: int) -> np.ndarray:
        planes = array.reshape(-1, height, width)
        out = [
            ndimage.map_coordinates(plane, coords, order=order, mode="mirror").astype(array.dtype)
            for plane in planes
        ]
        return np.stack(out).reshape(array.shape)

    return warp(image, 3), warp(label, 0)


@dataclass(frozen=True)
class Augmentation:
    """The augmentations of one training sample; ``crop=None`` keeps the whole image."""

    crop: tuple[int, ...] | None = None
    flips: bool = True
    rot90: bool = True
    intensity: float = 0.0  # 0 switches intensity jitter off
    jitter_label: bool = False
    elastic: float = 0.0  # displacement std (px) of the elastic deformation; 0 switches it off

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        if image.shape[1:] != label.shape[1:]:
            raise ValueError(f"image {image.shape} and label {label.shape} differ in spatial shape")
        if self.crop is not None:
            image, label = random_crop(image, label, self.crop, rng)
        if self.flips:
            image, label = random_flips(image, label, rng)
        if self.rot90:
            image, label = random_rot90(image, label, rng)
        if self.elastic > 0:
            image, label = elastic_deform(image, label, self.elastic, rng)
        if self.intensity > 0:
            gain_rng = np.random.default_rng(rng.integers(2**63)) if self.jitter_label else rng
            state = gain_rng.bit_generator.state
            image = intensity_jitter(image, self.intensity, gain_rng)
            if self.jitter_label:
                gain_rng.bit_generator.state = state  # the same gain and offset for the label
                label = intensity_jitter(label, self.intensity, gain_rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(label)
