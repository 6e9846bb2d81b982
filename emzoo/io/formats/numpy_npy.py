"""NumPy ``.npy`` arrays (memory-mapped); axes are guessed from the number of dimensions.

Never unpickled: object arrays are refused from the header (``allow_pickle=False`` everywhere). The
format has no metadata, so emzoo marks the ``.npy`` files it writes with a sidecar
(:mod:`emzoo.io.write`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from emzoo.errors import InputError
from emzoo.io.limits import check_file_holds
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


def _check_header(path: Path) -> None:
    """Refuse object arrays (a pickle: loading one could run code) and headers that claim more data
    than the file holds, from the header alone."""
    from numpy.lib import format as npy_format

    with open(path, "rb") as f:
        version = npy_format.read_magic(f)
        read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, _, dtype = read(f)
        offset = f.tell()
    if dtype.hasobject:
        raise InputError(
            f"{path}: the array holds Python objects (a pickle), which emzoo never loads: save it as a "
            "numeric array"
        )
    what = f"{'x'.join(map(str, shape))} {dtype.name}"
    check_file_holds(path, offset + math.prod(int(n) for n in shape) * dtype.itemsize, what)


@register_reader("npy", (".npy",))
def read_npy(path: Path) -> Image:
    _check_header(path)
    data = np.load(path, mmap_mode="r", allow_pickle=False)
    axes = guess_axes(data.shape)
    if not axes:
        raise ValueError(f"a {data.ndim}D array has no default axes; save it as 2D (yx) or 3D (zyx)")
    return Image(data, ImageMeta(axes=axes, source=path, format="npy"))


@register_writer("npy", ".npy")
def write_npy(path: Path, data, meta: ImageMeta) -> None:
    with open(path, "wb") as f:
        np.save(f, np.asarray(data), allow_pickle=False)
