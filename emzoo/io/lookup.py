"""Formats by file and by name: ``read_image(path)`` picks the reader by suffix (or folder layout),
``get_writer(name)`` the writer of a format. The built-in formats are loaded on first use.
"""

from __future__ import annotations

from pathlib import Path

from emzoo.errors import InputError, literal
from emzoo.io.meta import Image
from emzoo.io.registry import Reader, Writer, registered_readers, registered_writers


def list_readers() -> list[Reader]:
    return list(_readers().values())


def list_writers() -> list[Writer]:
    return list(_writers().values())


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for reader in _readers().values():
        for s in reader.suffixes:
            if name.endswith(s) and s.count(".") > 1:  # compound suffixes such as .ome.tif
                return s
    return path.suffix.lower()


def find_reader(path: Path) -> Reader | None:
    """The reader for ``path``, or None if no registered format claims it."""
    if path.is_dir():
        return next((r for r in _readers().values() if r.probe is not None and r.probe(path)), None)
    suffix = _suffix(path)
    return next((r for r in _readers().values() if suffix in r.suffixes), None)


def supported_suffixes() -> set[str]:
    return {s for r in _readers().values() for s in r.suffixes}


def read_image(path: str | Path) -> Image:
    """Read one image with the reader registered for its format."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{literal(path)}: no such file or folder")
    reader = find_reader(path)
    if reader is None:
        known = ", ".join(sorted(supported_suffixes()))
        raise InputError(f"{literal(path)}: not an image format emzoo reads (known: {known})")
    try:
        return reader.read(path)
    except InputError:
        raise
    except Exception as e:  # a reader library's own error: keep its message, name the file
        raise InputError(
            f"{literal(path)}: cannot be read as {reader.name} ({type(e).__name__}: {literal(e)})"
        ) from e


def get_writer(name: str) -> Writer:
    writers = _writers()
    try:
        return writers[name]
    except KeyError:
        raise InputError(f"unknown output format {name!r} (known: {', '.join(sorted(writers))})") from None


def _readers() -> dict[str, Reader]:
    from emzoo.io import formats  # noqa: F401  (the built-in formats register themselves on import)

    return registered_readers()


def _writers() -> dict[str, Writer]:
    from emzoo.io import formats  # noqa: F401

    return registered_writers()
