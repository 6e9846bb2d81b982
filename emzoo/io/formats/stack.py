"""A folder of numbered 2D slices (``0001.tif``, ``slice_2.png``, ...) read as one ``zyx`` volume.

Not a registered reader: a folder of images is normally a batch of separate inputs; the CLI reads one as
a volume only when the user asks (``--stack``). The slices are sorted naturally (``2`` before ``10``),
must all have the same format, shape and dtype, and are read lazily: indexing the returned
:class:`SliceStack` decodes only the slices it needs (the last few are kept for repeated tile reads).
"""

from __future__ import annotations

import operator
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.errors import InputError
from emzoo.io.lookup import find_reader, read_image
from emzoo.io.meta import Image, ImageMeta

_SAME_SUFFIX = {".tiff": ".tif", ".jpeg": ".jpg"}
_PIL_MODES = {
    "1": ("bool", ()),
    "L": ("uint8", ()),
    "LA": ("uint8", (2,)),
    "I;16": ("uint16", ()),
    "I;16L": ("uint16", ()),
    "I;16B": ("uint16", ()),
    "I": ("int32", ()),
    "F": ("float32", ()),
    "RGB": ("uint8", (3,)),
    "RGBA": ("uint8", (4,)),
}


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: ``img2`` < ``img10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name.lower())]


def _peek(path: Path) -> tuple[tuple[int, ...], str]:
    """Shape and dtype from the file's header, without decoding the pixels (when the format allows)."""
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return tuple(series.shape), str(series.dtype)
    if suffix in (".png", ".jpg", ".jpeg"):
        from PIL import Image as PILImage

        with PILImage.open(path) as im:
            dtype, extra = _PIL_MODES.get(im.mode, (im.mode, ()))
            return (im.height, im.width, *extra), dtype
    data = read_image(path).data  # other formats: their readers are lazy or small
    return tuple(data.shape), str(data.dtype)


class SliceStack:
    """Lazy ``(z, y, x[, c])`` array over a list of 2D image files, one file per z index.

    Supports ``shape``, ``dtype``, ``ndim``, ``len()``, ``np.asarray()`` and numpy indexing whose first
    index is an integer, slice, integer list/array or boolean mask; only the selected slices are read.
    """

    def __init__(self, files: list[Path], slice_shape: tuple[int, ...], dtype, *, cache_slices: int = 4):
        self.files = tuple(files)
        self.shape = (len(self.files), *slice_shape)
        self.dtype = np.dtype(dtype)
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._cache_size = cache_slices
        self._lock = threading.Lock()

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        folder = self.files[0].parent if self.files else "?"
        return f"SliceStack({folder}, shape={self.shape}, dtype={self.dtype})"

    def _slice(self, i: int):
        with self._lock:
            if i in self._cache:
                self._cache.move_to_end(i)
                return self._cache[i]
        path = self.files[i]
        data = read_image(path).data
        if tuple(data.shape) != self.shape[1:] or np.dtype(data.dtype) != self.dtype:
            raise InputError(
                f"{path}: slice {i} is {'x'.join(map(str, data.shape))} {data.dtype}, but the stack is "
                f"{'x'.join(map(str, self.shape[1:]))} {self.dtype}: all slices must match"
            )
        with self._lock:
            self._cache[i] = data
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return data

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is None for k in key):
            raise IndexError("SliceStack indexing does not support np.newaxis")
        ellipses = [i for i, k in enumerate(key) if k is Ellipsis]
        if ellipses:
            i = ellipses[0]
            key = (*key[:i], *([slice(None)] * (self.ndim - len(key) + 1)), *key[i + 1 :])
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for a {self.ndim}D SliceStack")
        first, rest = (key[0], key[1:]) if key else (slice(None), ())
        n = len(self)
        if isinstance(first, int | np.integer):
            i = operator.index(first)
            if not -n <= i < n:
                raise IndexError(f"slice index {i} is out of range for {n} slices")
            return np.asarray(self._slice(i % n)[rest])
        indices = np.arange(n)[first]
        if indices.ndim != 1:
            raise IndexError("the first index of a SliceStack must select a 1D set of slices")
        planes = [np.asarray(self._slice(int(i))[rest]) for i in indices]
        if planes:
            return np.stack(planes)
        return np.empty((0, *self.shape[1:]), self.dtype)[(slice(None), *rest)]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = self[:]
        return data if dtype is None else data.astype(dtype)


def read_slice_folder(folder: str | Path) -> Image:
    """Read a folder of numbered 2D images as one ``zyx`` (or ``zyxc`` for RGB) volume, lazily.

    Hidden files and files emzoo cannot read are ignored; the others must share one format (``.tif`` and
    ``.tiff`` count as one), one shape and one dtype, or :class:`~emzoo.errors.InputError` says which
    file differs. The in-plane pixel size comes from the first slice (TIFF only); z is unknown.
    ``meta.header["files"]`` lists the file names in z order.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "no such folder" if not folder.exists() else "not a folder (a stack is a folder of 2D images)"
        raise InputError(f"{folder}: {what}")
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and find_reader(p) is not None
    ]
    if not files:
        raise InputError(f"{folder}: the folder holds no image file that emzoo reads")
    by_suffix: dict[str, int] = {}
    for p in files:
        s = _SAME_SUFFIX.get(p.suffix.lower(), p.suffix.lower())
        by_suffix[s] = by_suffix.get(s, 0) + 1
    if len(by_suffix) > 1:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(by_suffix.items()))
        raise InputError(f"{folder}: a slice folder must hold one image format, this one has {counts}")
    files.sort(key=lambda p: natural_key(p.name))

    signatures: dict[tuple, list[Path]] = {}
    for p in files:
        try:
            shape, dtype = _peek(p)
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"{p}: cannot be read as a slice ({type(e).__name__}: {e})") from e
        signatures.setdefault((shape, dtype), []).append(p)
    if len(signatures) > 1:
        kinds = sorted(signatures.items(), key=lambda kv: -len(kv[1]))
        listed = "; ".join(
            f"{len(ps)} file(s) {'x'.join(map(str, s))} {d} (e.g. {ps[0].name})" for (s, d), ps in kinds[:4]
        )
        raise InputError(f"{folder}: all slices must have the same shape and dtype, but found {listed}")

    first = read_image(files[0])
    if first.meta.axes not in ("yx", "yxc"):
        raise InputError(
            f"{files[0]}: slices must be 2D images (yx or yxc), this one has axes {first.meta.axes!r}"
        )
    stack = SliceStack(files, tuple(first.data.shape), first.data.dtype)
    meta = ImageMeta(
        axes="z" + first.meta.axes,
        pixel_size={a: s for a, s in first.meta.pixel_size.items() if a in "yx"},
        unit=first.meta.unit if first.meta.pixel_size else None,
        source=folder,
        format="slice-folder",
        header={"files": [p.name for p in files], "slice_format": first.meta.format},
    )
    return Image(stack, meta)
