"""Run a 2D model on a 3D volume slice by slice (``emzoo predict --slices``).

Each z slice is one sample, exactly as if it had been given as a separate 2D image: its per-sample
statistics (mean, std, percentiles of the pre-processing) come from that slice alone, and the outputs
are stacked along z again, keeping the volume's z spacing. The volume is read lazily, one slice at a
time, through :class:`SliceView`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np

from emzoo.errors import InputError, UsageError
from emzoo.io.meta import Image
from emzoo.runtime.predictor import Predictor

SLICE_AXIS = "z"
Progress = Callable[[int, int], None]


class SliceView:
    """Index ``index`` of dimension ``dim`` of a (lazy) array, itself lazy: reads only what is indexed.

    Works over numpy arrays, memory maps, zarr arrays and :class:`emzoo.io.formats.stack.SliceStack`
    (anything indexed with a tuple of ints and slices).
    """

    def __init__(self, source, dim: int, index: int):
        self.source, self.dim, self.index = source, dim, int(index)
        shape = tuple(int(n) for n in source.shape)
        if not -shape[dim] <= self.index < shape[dim]:
            raise IndexError(f"slice {index} is out of range for {shape[dim]} slices")
        self.shape = shape[:dim] + shape[dim + 1 :]
        self.dtype = np.dtype(source.dtype)
        self.ndim = len(self.shape)

    @property
    def chunks(self) -> tuple[int, ...] | None:
        from emzoo.runtime.processing import storage_chunks

        inner = storage_chunks(self.source)
        return None if inner is None else inner[: self.dim] + inner[self.dim + 1 :]

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        return np.asarray(self.source[(*key[: self.dim], self.index, *key[self.dim :])])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[(slice(None),) * self.ndim]
        return out if dtype is None else out.astype(dtype)


def model_is_2d(predictor: Predictor) -> bool:
    return all(a.id != SLICE_AXIS for t in predictor.spec.inputs for a in t.spatial_axes)


def check_slices(predictor: Predictor) -> None:
    """``--slices`` only makes sense for models that take 2D images."""
    if not model_is_2d(predictor):
        want = predictor.spec.inputs[0].describe_axes()
        raise UsageError(
            f"{{slices=True}} runs a 2D model on each z slice, but this model takes 3D volumes ({want}): "
            "leave {slices=True} out"
        )


def takes_slices(images: Mapping[str, Image]) -> bool:
    """Do the images have a z axis to iterate (any length)?"""
    return all(SLICE_AXIS in image.meta.axes for image in images.values())


def slice_image(image: Image, index: int) -> Image:
    """Slice ``index`` along z, lazily, with the in-plane calibration."""
    dim = image.meta.axes.index(SLICE_AXIS)
    axes = image.meta.axes.replace(SLICE_AXIS, "")
    return Image(SliceView(image.data, dim, index), image.meta.with_axes(axes))


def n_slices(images: Mapping[str, Image]) -> int:
    counts = {image.shape[image.meta.axes.index(SLICE_AXIS)] for image in images.values()}
    if len(counts) != 1:
        raise InputError(
            f"the inputs have different numbers of z slices ({', '.join(map(str, sorted(counts)))}): "
            "slice-by-slice prediction needs one z length"
        )
    return counts.pop()


def with_slice_axis(image: Image, reference: Image) -> Image:
    """A stack of per-slice outputs (z first in ``image.data``) with the volume's z spacing."""
    pixel_size = dict(image.meta.pixel_size)
    if SLICE_AXIS in reference.meta.pixel_size and pixel_size:
        pixel_size[SLICE_AXIS] = reference.meta.pixel_size[SLICE_AXIS]
    return Image(image.data, replace(image.meta, axes=SLICE_AXIS + image.meta.axes, pixel_size=pixel_size))


def predict_slices(
    predictor: Predictor,
    images: Mapping[str, Image],
    *,
    progress: Progress | None = None,
    keep_axes: bool = False,
) -> dict[str, Image]:
    """Predict every z slice of the volume(s) as its own 2D sample; outputs are stacked along z.

    Examples
    --------
    >>> out = predict_slices(Predictor("model.zip"), {"raw": volume})  # doctest: +SKIP
    >>> out["prob"].meta.axes  # doctest: +SKIP
    'zyx'
    """
    check_slices(predictor)
    n = n_slices(images)
    stacks: dict[str, np.ndarray] = {}
    metas: dict[str, Image] = {}  # the first slice's output: axes and in-plane calibration
    for z in range(n):
        slices = {tid: slice_image(image, z) for tid, image in images.items()}
        results = predictor.predict(slices, keep_axes=keep_axes)
        for tid, image in results.items():
            data = np.asarray(image.data)
            if tid not in stacks:
                stacks[tid] = np.empty((n, *data.shape), data.dtype)
                metas[tid] = image
            stacks[tid][z] = data
        if progress is not None:
            progress(z + 1, n)
    reference = next(iter(images.values()))
    return {tid: with_slice_axis(Image(stacks[tid], metas[tid].meta), reference) for tid in stacks}
