"""The tables of readers and writers: one per format, filled by the decorators :func:`register_reader`
(file suffixes or folder layouts) and :func:`register_writer` (a format name). Looking formats up
(``read_image``, ``get_writer``) is :mod:`emzoo.io.lookup`'s job, which loads the built-in formats.

A writer declares the dtypes it holds (``dtypes``, None: any) and how its files are recognised as
emzoo's own outputs (``marked``: reads the :data:`WRITTEN_BY` mark its writer embeds; None: the
format has no metadata and :func:`emzoo.io.write.write_image` writes a sidecar instead). A writer of
``pictures`` (PNG) holds float images as 8-bit pictures (:mod:`emzoo.io.preview`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emzoo.io.meta import Image, ImageMeta
from emzoo.version import __version__

# the mark emzoo's writers embed in every image they write (TIFF Software tag, MRC label, OME-Zarr
# attribute, PNG text): how a later run recognises its own outputs among its inputs
WRITTEN_BY = f"emzoo {__version__}"

ReadFn = Callable[[Path], Image]
WriteFn = Callable[[Path, object, ImageMeta], None]
ProbeFn = Callable[[Path], bool]
MarkedFn = Callable[[Path], bool]


def is_mark(text: object) -> bool:
    """Is ``text`` (a tag, label or attribute read back) emzoo's :data:`WRITTEN_BY` mark?"""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    return isinstance(text, str) and text.strip("\x00 ").startswith("emzoo ")


@dataclass(frozen=True)
class Reader:
    name: str
    suffixes: tuple[str, ...]
    read: ReadFn
    probe: ProbeFn | None = None  # for folders (e.g. a Zarr store): does this path belong to me?


@dataclass(frozen=True)
class Writer:
    name: str
    suffix: str
    write: WriteFn
    dtypes: tuple[str, ...] | None = None  # the dtypes the format holds; None: any
    marked: MarkedFn | None = None  # does this file carry emzoo's mark? None: a sidecar marks it
    pictures: bool = False  # float images are written as 8-bit pictures (emzoo.io.preview)


_READERS: dict[str, Reader] = {}
_WRITERS: dict[str, Writer] = {}


def register_reader(name: str, suffixes: tuple[str, ...], probe: ProbeFn | None = None):
    """Decorator: register ``fn(path) -> Image`` as the reader for ``suffixes`` (lower case, with dot)."""

    def deco(fn: ReadFn) -> ReadFn:
        _READERS[name] = Reader(name, tuple(s.lower() for s in suffixes), fn, probe)
        return fn

    return deco


def register_writer(
    name: str,
    suffix: str,
    *,
    dtypes: tuple[str, ...] | None = None,
    marked: MarkedFn | None = None,
    pictures: bool = False,
):
    """Decorator: register ``fn(path, array, meta)`` as the writer of format ``name`` (``dtypes``: what
    it holds, None: any; ``marked``: recognises the :data:`WRITTEN_BY` mark ``fn`` embeds;
    ``pictures``: float images reach ``fn`` as 8-bit pictures)."""

    def deco(fn: WriteFn) -> WriteFn:
        _WRITERS[name] = Writer(name, suffix, fn, dtypes, marked, pictures)
        return fn

    return deco


def registered_readers() -> dict[str, Reader]:
    """Format name -> reader, for the formats registered so far."""
    return dict(_READERS)


def registered_writers() -> dict[str, Writer]:
    """Format name -> writer, for the formats registered so far."""
    return dict(_WRITERS)
