"""One reader and one writer per format behind one registry.

Readers register with :func:`register_reader` for file suffixes (or folder layouts), writers with
:func:`register_writer` for a format name. ``read_image(path)`` picks the reader by suffix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emzoo.errors import InputError
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


def list_readers() -> list[Reader]:
    _load_builtin_formats()
    return list(_READERS.values())


def list_writers() -> list[Writer]:
    _load_builtin_formats()
    return list(_WRITERS.values())


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for reader in _READERS.values():
        for s in reader.suffixes:
            if name.endswith(s) and s.count(".") > 1:  # compound suffixes such as .ome.tif
                return s
    return path.suffix.lower()


def find_reader(path: Path) -> Reader | None:
    """The reader for ``path``, or None if no registered format claims it."""
    _load_builtin_formats()
    if path.is_dir():
        return next((r for r in _READERS.values() if r.probe is not None and r.probe(path)), None)
    suffix = _suffix(path)
    return next((r for r in _READERS.values() if suffix in r.suffixes), None)


def supported_suffixes() -> set[str]:
    _load_builtin_formats()
    return {s for r in _READERS.values() for s in r.suffixes}


def read_image(path: str | Path) -> Image:
    """Read one image with the reader registered for its format."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    reader = find_reader(path)
    if reader is None:
        known = ", ".join(sorted(supported_suffixes()))
        raise InputError(f"{path}: not an image format emzoo reads (known: {known})")
    try:
        return reader.read(path)
    except InputError:
        raise
    except Exception as e:  # a reader library's own error: keep its message, name the file
        raise InputError(f"{path}: cannot be read as {reader.name} ({type(e).__name__}: {e})") from e


def get_writer(name: str) -> Writer:
    _load_builtin_formats()
    try:
        return _WRITERS[name]
    except KeyError:
        raise InputError(f"unknown output format {name!r} (known: {', '.join(sorted(_WRITERS))})") from None


_LOADED = False


def _load_builtin_formats() -> None:
    """Import the built-in format modules once; each registers itself."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from emzoo.io import formats  # noqa: F401
