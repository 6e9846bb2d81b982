"""The tables of readers and writers: one per format, filled by the decorators :func:`register_reader`
(file suffixes or folder layouts) and :func:`register_writer` (a format name). Looking formats up
(``read_image``, ``get_writer``) is :mod:`emzoo.io.lookup`'s job, which loads the built-in formats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emzoo.io.meta import Image, ImageMeta

ReadFn = Callable[[Path], Image]
WriteFn = Callable[[Path, object, ImageMeta], None]
ProbeFn = Callable[[Path], bool]


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


_READERS: dict[str, Reader] = {}
_WRITERS: dict[str, Writer] = {}


def register_reader(name: str, suffixes: tuple[str, ...], probe: ProbeFn | None = None):
    """Decorator: register ``fn(path) -> Image`` as the reader for ``suffixes`` (lower case, with dot)."""

    def deco(fn: ReadFn) -> ReadFn:
        _READERS[name] = Reader(name, tuple(s.lower() for s in suffixes), fn, probe)
        return fn

    return deco


def register_writer(name: str, suffix: str):
    """Decorator: register ``fn(path, array, meta)`` as the writer of format ``name``."""

    def deco(fn: WriteFn) -> WriteFn:
        _WRITERS[name] = Writer(name, suffix, fn)
        return fn

    return deco


def registered_readers() -> dict[str, Reader]:
    """Format name -> reader, for the formats registered so far."""
    return dict(_READERS)


def registered_writers() -> dict[str, Writer]:
    """Format name -> writer, for the formats registered so far."""
    return dict(_WRITERS)
