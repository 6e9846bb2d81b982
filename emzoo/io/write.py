"""Atomic writes: a temporary file beside the target, renamed into place only when complete."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from emzoo.io.meta import ImageMeta
from emzoo.io.registry import get_writer


def temporary_sibling(path: Path) -> Path:
    """A hidden name in the same folder (so the final rename stays on one file system)."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def write_image(path: str | Path, data, meta: ImageMeta, *, format: str = "tiff") -> Path:
    """Write ``data`` with the writer of ``format``; nothing appears at ``path`` unless it succeeds."""
    path = Path(path)
    writer = get_writer(format)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        writer.write(tmp, data, meta)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    return path
