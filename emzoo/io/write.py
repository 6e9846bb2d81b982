"""Image writing through the writer registry, atomically (see :mod:`emzoo.atomic`), and how emzoo
recognises what it wrote.

**Own outputs.** Every image emzoo writes carries a mark (:data:`emzoo.io.registry.WRITTEN_BY`,
``emzoo VERSION``) inside the file, where the format has metadata: the TIFF ``Software`` tag, an MRC
header label, an ``emzoo`` attribute of the OME-Zarr group, a PNG ``Software`` text chunk. The mark
travels with the file (renamed, moved, copied) and is written in the same atomic step as the pixels,
so a file carries it exactly when emzoo wrote it. ``.npy`` has no room for metadata: a hidden sidecar
``.NAME.emzoo`` beside it holds the mark and the size of the file it describes (a file replaced by
another size is no longer taken for emzoo's). :func:`written_by_emzoo` reads the mark back; the file
driver uses it so that outputs written inside an input folder are not predicted again on the next
run.

**Writable dtypes.** :func:`writable_dtype` (what an array is written as) and :func:`check_writable`
(does a format hold it) are the one place that knows what the formats take; :func:`cast_to` casts
an output to another dtype (``--output-dtype input``). A format of 8-bit
pictures (PNG) takes integers it holds (uint8, uint16: label images) as they are, losslessly, and
float images as 8-bit pictures (:func:`emzoo.io.preview.preview_pixels`: probabilities linear,
others stretched; a volume's middle slice; channels in a grid).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from emzoo.atomic import atomic_path, write_text_atomic
from emzoo.errors import UsageError
from emzoo.io.lookup import get_writer, list_writers
from emzoo.io.meta import ImageMeta
from emzoo.io.preview import preview_pixels
from emzoo.io.registry import WRITTEN_BY, Writer, is_mark


def write_image(
    path: str | Path, data, meta: ImageMeta, *, format: str = "tiff", probability: bool | None = None
) -> Path:
    """Write ``data`` with the writer of ``format``; nothing appears at ``path`` unless it succeeds
    (a full disk raises :class:`emzoo.atomic.NoSpaceError` and leaves nothing behind). Float data
    meant for a format of pictures (PNG) is written as one (``probability``: the data are
    probabilities; None: decided from the values)."""
    writer = get_writer(format)
    if writer.pictures and np.dtype(data.dtype).kind == "f":
        data = preview_pixels(data, meta.axes, probability=probability)
        meta = meta.with_axes("yx")
    path = Path(path)
    needed = _nbytes(data)
    with atomic_path(path, needed=needed) as tmp:
        writer.write(tmp, data, meta)
    if writer.marked is None:
        _write_sidecar(path)
    return path


def _nbytes(data) -> int | None:
    try:
        return int(np.prod(data.shape, dtype=np.int64)) * np.dtype(data.dtype).itemsize
    except (AttributeError, TypeError, ValueError):
        return None


def sidecar_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.emzoo")


def _write_sidecar(path: Path) -> None:
    info = {"written_by": WRITTEN_BY, "size": path.stat().st_size}
    write_text_atomic(sidecar_path(path), json.dumps(info))


def _sidecar_marks(path: Path) -> bool:
    try:
        info = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
        return is_mark(info.get("written_by")) and info.get("size") == path.stat().st_size
    except (OSError, ValueError, AttributeError):
        return False


def _writer_for(path: Path) -> Writer | None:
    name = path.name.lower()
    matches = [w for w in list_writers() if name.endswith(w.suffix)]
    return max(matches, key=lambda w: len(w.suffix), default=None)  # .ome.zarr before .zarr


def written_by_emzoo(path: str | Path) -> bool:
    """Does ``path`` carry emzoo's mark (see the module docstring)? Never raises."""
    path = Path(path)
    writer = _writer_for(path)
    if writer is None:
        return False
    if writer.marked is None:
        return _sidecar_marks(path)
    with contextlib.suppress(Exception):  # an unreadable file is not ours
        return bool(writer.marked(path))
    return False


def writable_dtype(dtype, format: str | None = None) -> np.dtype:
    """The dtype an array of ``dtype`` is written as: bool as uint8, float64 as float32, else itself;
    in ``format``, if it is one of 8-bit pictures (PNG), floats as uint8 pictures.

    >>> [writable_dtype(d).name for d in ("bool", "float64", "int32")]
    ['uint8', 'float32', 'int32']
    >>> [writable_dtype(d, "png").name for d in ("float32", "uint16", "int32")]
    ['uint8', 'uint16', 'int32']
    """
    d = np.dtype(dtype)
    if d == np.bool_ or (d.kind == "f" and format is not None and get_writer(format).pictures):
        return np.dtype(np.uint8)
    if d == np.float64:
        return np.dtype(np.float32)
    return d


def cast_to(data, dtype) -> np.ndarray:
    """``data`` as ``dtype``: to an integer dtype rounded and clipped to its range, else cast (e.g. a
    denoiser's float grey levels back to the input's uint8).

    >>> cast_to(np.array([-3.2, 7.6, 300.0]), "uint8").tolist()
    [0, 8, 255]
    """
    d, arr = np.dtype(dtype), np.asarray(data)
    if d.kind in "ui" and arr.dtype.kind in "fiu":
        info = np.iinfo(d)
        arr = np.rint(arr) if arr.dtype.kind == "f" else arr
        return np.clip(arr, info.min, info.max).astype(d)
    return arr.astype(d, copy=False)


def check_writable(format: str, dtype, what: str = "the data") -> None:
    """Raise :class:`UsageError` (naming ``{format}``) when the writer of ``format`` cannot hold
    ``dtype`` as :func:`writable_dtype` converts it."""
    writer = get_writer(format)
    written = writable_dtype(dtype, format)
    if writer.dtypes is None or written.name in writer.dtypes:
        return
    others = sorted(
        w.name for w in list_writers() if w.dtypes is None or writable_dtype(dtype, w.name).name in w.dtypes
    )
    raise UsageError(
        f"{{format}} {format}: {format.upper()} holds {' or '.join(writer.dtypes)} only, but {what} is "
        f"{written.name}: write {', '.join(others)} instead"
    )
