"""NumPy ``.npy`` arrays (memory-mapped); axes are guessed from the number of dimensions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emzoo.io.meta import Image, ImageMeta
from emzoo.io.registry import register_reader, register_writer

_AXES_BY_NDIM = {2: "yx", 3: "zyx", 4: "czyx"}


def guess_axes(shape: tuple[int, ...]) -> str:
    """``yx`` for 2D, ``zyx`` for 3D, except a small last or first axis (<= 4) reads as channels.

    Leading length-1 dimensions beyond three (a bioimage.io test tensor is ``bcyx``) are ``b``.
    """
    if len(shape) > 3 and shape[0] == 1:
        rest = guess_axes(shape[1:])
        return "b" + rest if rest else ""
    if len(shape) == 3 and shape[-1] <= 4 < min(shape[:2]):
        return "yxc"
    if len(shape) == 3 and shape[0] <= 4 < min(shape[1:]):
        return "cyx"
    return _AXES_BY_NDIM.get(len(shape), "")


@register_reader("npy", (".npy",))
def read_npy(path: Path) -> Image:
    data = np.load(path, mmap_mode="r", allow_pickle=False)
    axes = guess_axes(data.shape)
    if not axes:
        raise ValueError(f"a {data.ndim}D array has no default axes; save it as 2D (yx) or 3D (zyx)")
    return Image(data, ImageMeta(axes=axes, source=path, format="npy"))


@register_writer("npy", ".npy")
def write_npy(path: Path, data, meta: ImageMeta) -> None:
    with open(path, "wb") as f:
        np.save(f, np.asarray(data), allow_pickle=False)
