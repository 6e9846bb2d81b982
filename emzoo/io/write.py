"""Image writing through the writer registry, atomically (see :mod:`emzoo.atomic`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emzoo.atomic import atomic_path
from emzoo.io.lookup import get_writer
from emzoo.io.meta import ImageMeta


def write_image(path: str | Path, data, meta: ImageMeta, *, format: str = "tiff") -> Path:
    """Write ``data`` with the writer of ``format``; nothing appears at ``path`` unless it succeeds."""
    writer = get_writer(format)
    with atomic_path(path) as tmp:
        writer.write(tmp, data, meta)
    return Path(path)


def writable_dtype(dtype) -> np.dtype:
    """The dtype an array of ``dtype`` is written as: bool as uint8, float64 as float32, else itself."""
    d = np.dtype(dtype)
    if d == np.bool_:
        return np.dtype(np.uint8)
    if d == np.float64:
        return np.dtype(np.float32)
    return d
