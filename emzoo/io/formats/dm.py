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

MAX_STRUCT_FIELDS = 4096  # real DM tag structs have a handful of fields


def _bounded_struct_definition(self) -> tuple:
    """rsciio's ``parse_struct_definition`` with the field count bounded: it trusts the count, and a
    damaged file claiming millions of fields builds a tuple in a quadratic loop for minutes."""
    self.read_l_or_q(self.f, "big")  # a length
    nfields = self.read_l_or_q(self.f, "big")
    if nfields > MAX_STRUCT_FIELDS:
        raise struct.error(f"a tag struct claims {nfields} fields")
    definition = []
    for _ in range(nfields):
        self.read_l_or_q(self.f, "big")  # a length
        definition.append(self.read_l_or_q(self.f, "big"))
    return tuple(definition)


@register_reader("dm", (".dm3", ".dm4"))
def read_dm(path: Path) -> Image:
    from rsciio.digitalmicrograph import _api, file_reader

    # rsciio offers no limit of its own: replace its one unbounded parser step (same result otherwise)
    _api.DigitalMicrographReader.parse_struct_definition = _bounded_struct_definition

    try:
        signals = file_reader(str(path), lazy=True)
    except Exception as e:  # rsciio's parser raises bare IOError/KeyError/struct.error on damaged files
        hint = ": the file ends inside its tags, truncated?" if isinstance(e, struct.error | EOFError) else ""
        raise InputError(
            f"{path}: not a readable Digital Micrograph file, or it is damaged{hint} "
            f"({type(e).__name__}: {e})"
        ) from e
    return pick_image(path, signals or [], "dm", what="Digital Micrograph file")
