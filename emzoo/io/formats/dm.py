"""Gatan Digital Micrograph ``.dm3`` / ``.dm4`` through rosettasciio.

The data stays lazy (a dask array over a memory map of the file). A 2D image is ``yx``, an image series
``zyx``; the pixel size and unit come from the axes' calibration (scale and units). Spectra and
spectrum images are not images: a file holding only those is refused with a clear message.
"""

from __future__ import annotations

import struct
from pathlib import Path

from emzoo.errors import InputError
from emzoo.io.formats.rsciio_files import pick_image
from emzoo.io.meta import Image
from emzoo.io.registry import register_reader


@register_reader("dm", (".dm3", ".dm4"))
def read_dm(path: Path) -> Image:
    from rsciio.digitalmicrograph import file_reader

    try:
        signals = file_reader(str(path), lazy=True)
    except Exception as e:  # rsciio's parser raises bare IOError/KeyError/struct.error on damaged files
        hint = ": the file ends inside its tags, truncated?" if isinstance(e, struct.error | EOFError) else ""
        raise InputError(
            f"{path}: not a readable Digital Micrograph file, or it is damaged{hint} "
            f"({type(e).__name__}: {e})"
        ) from e
    return pick_image(path, signals or [], "dm", what="Digital Micrograph file")
