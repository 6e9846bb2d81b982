"""Image writing through the writer registry, atomically (see :mod:`emzoo.atomic`)."""

from __future__ import annotations

from pathlib import Path

from emzoo.atomic import atomic_path
from emzoo.io.meta import ImageMeta
from emzoo.io.registry import get_writer


def write_image(path: str | Path, data, meta: ImageMeta, *, format: str = "tiff") -> Path:
    """Write ``data`` with the writer of ``format``; nothing appears at ``path`` unless it succeeds."""
    writer = get_writer(format)
    with atomic_path(path) as tmp:
        writer.write(tmp, data, meta)
    return Path(path)
