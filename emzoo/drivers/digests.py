"""sha256 digests of what a prediction read, without reading terabytes (for the provenance records of
:mod:`emzoo.drivers.provenance`).

* A file up to :data:`FULL_HASH_BYTES` is hashed whole, in 1 MiB reads (a 4096 x 4096 image: a few
  ms); a larger one by its size and its first and last :data:`PART_BYTES`.
* A Zarr store by its metadata files only (``.zgroup``, ``.zarray``, ``.zattrs``, ``zarr.json``,
  ``.zmetadata``; array folders, which hold the chunks, are not even listed).
* Any other folder (a folder of slices) by the names and sizes of its files.

Each digest says what it covers (``sha256_of``).
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

FULL_HASH_BYTES = 2**32  # larger input files are hashed by their size, first and last PART_BYTES
PART_BYTES = 16 * 2**20
_READ = 2**20
_ZARR_METADATA = (".zgroup", ".zarray", ".zattrs", "zarr.json", ".zmetadata")


def file_digest(path: Path) -> dict[str, Any]:
    """A file's digest: whole up to :data:`FULL_HASH_BYTES`, else its size, first and last part."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            while block := f.read(_READ):
                h.update(block)
            return {"sha256": h.hexdigest(), "sha256_of": "the file", "bytes": size}
        h.update(str(size).encode() + b"\0")
        for offset in (0, size - PART_BYTES):
            f.seek(offset)
            left = PART_BYTES
            while left and (block := f.read(min(_READ, left))):
                h.update(block)
                left -= len(block)
    of = f"the file's size and its first and last {PART_BYTES // 2**20} MiB (it is over 4 GiB)"
    return {"sha256": h.hexdigest(), "sha256_of": of, "bytes": size}


def _zarr_metadata(root: Path) -> list[Path]:
    """The metadata files of a Zarr store; array folders (their chunks) are not listed."""
    found, folders = [], [root]
    while folders:
        folder = folders.pop()
        here = [folder / name for name in _ZARR_METADATA if (folder / name).is_file()]
        found += here
        is_array = (folder / ".zarray").is_file() or _v3_array(folder / "zarr.json")
        if is_array or (not here and folder != root):
            continue
        with os.scandir(folder) as entries:
            folders += [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]
    return sorted(found)


def _v3_array(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("node_type") == "array"
    except (OSError, ValueError, AttributeError):
        return False


def _folder_digest(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    if any((path / name).is_file() for name in _ZARR_METADATA):
        files = _zarr_metadata(path)
        for f in files:
            h.update(f.relative_to(path).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
        of = "the store's metadata files (.zgroup, .zarray, .zattrs, zarr.json), not its chunks"
        return {"sha256": h.hexdigest(), "sha256_of": of, "files": len(files)}
    with os.scandir(path) as entries:
        listing = sorted((e.name, e.stat().st_size) for e in entries if e.is_file() and e.name[0] != ".")
    for name, size in listing:
        h.update(f"{name}\0{size}\n".encode())
    of = "the names and sizes of the folder's files, not their pixels"
    return {"sha256": h.hexdigest(), "sha256_of": of, "files": len(listing)}


def input_digest(path: Path) -> dict[str, Any]:
    """``{"sha256", "sha256_of", ...}`` of an input file or folder (see the module's docstring)."""
    path = Path(path)
    return _folder_digest(path) if path.is_dir() else file_digest(path)


@lru_cache(maxsize=32)
def _cached_sha256(path: str, mtime_ns: int, size: int) -> str:
    return file_digest(Path(path))["sha256"]


def package_file_sha256(path: Path) -> str:
    """A package file's sha256, computed once per run (per path, modification time and size)."""
    st = path.stat()
    return _cached_sha256(str(path.resolve()), st.st_mtime_ns, st.st_size)
