"""Unpack a model package zip without trusting it: no paths outside the target, no links, a size cap.

The files are extracted into a hidden temporary sibling of the target (``.NAME.partial-PID``) that is
renamed into place only when every member is unpacked and checked: a damaged member (bad CRC, broken
compressed data) is a :class:`PackageError` naming it, a full disk a one-line
:class:`emzoo.atomic.NoSpaceError`, and neither leaves a folder behind in the cache. Partial folders
of processes that were killed while unpacking are removed on the next unpack of the same package.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from emzoo.atomic import is_disk_full, no_space, remove_stale_partials, temporary_sibling
from emzoo.errors import PackageError

DEFAULT_MAX_BYTES = 8 * 1024**3  # 8 GiB unpacked; EMZOO_MAX_PACKAGE_BYTES overrides


def max_unpacked_bytes() -> int:
    return int(os.environ.get("EMZOO_MAX_PACKAGE_BYTES", DEFAULT_MAX_BYTES))


def _check_entry(zip_path: Path, info: zipfile.ZipInfo) -> None:
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise PackageError(f"{zip_path}: unsafe zip entry {name!r} is a symbolic link; refusing to unpack")
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise PackageError(
            f"{zip_path}: unsafe zip entry {name!r} points outside the package folder; refusing to unpack"
        )


def extract_zip_safely(zip_path: Path, target: Path, *, max_bytes: int | None = None) -> None:
    """Extract ``zip_path`` into the new folder ``target`` (atomically: a temporary folder is renamed)."""
    limit = max_unpacked_bytes() if max_bytes is None else max_bytes
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise PackageError(f"{zip_path}: not a valid zip file ({e})") from e
    tmp = temporary_sibling(target)
    remove_stale_partials(target)
    shutil.rmtree(tmp, ignore_errors=True)
    declared = 0
    try:
        tmp.mkdir(parents=True)  # also for a zip without members: an empty package folder
        with archive:
            infos = archive.infolist()
            for info in infos:
                _check_entry(zip_path, info)
            declared = sum(i.file_size for i in infos)
            if declared > limit:
                raise PackageError(
                    f"{zip_path}: unpacks to {declared / 1e9:.2f} GB, more than the limit of "
                    f"{limit / 1e9:.2f} GB (set EMZOO_MAX_PACKAGE_BYTES to allow more)"
                )
            written = 0
            for info in infos:
                dest = tmp.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                written = _extract_member(zip_path, archive, info, dest, written, limit)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # another process may have finished the same package first
                raise
    except zipfile.BadZipFile as e:
        raise PackageError(f"{zip_path}: the zip file is damaged ({e})") from e
    except OSError as e:
        if is_disk_full(e):
            raise no_space(target.parent, declared) from None
        raise PackageError(f"{zip_path}: cannot be unpacked into {target.parent} ({e})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract_member(
    zip_path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, written: int, limit: int
) -> int:
    """Copy one member to ``dest``; returns the bytes unpacked so far. A damaged member (bad CRC,
    broken compressed data, cut short) is a :class:`PackageError` that names it."""
    try:
        with archive.open(info) as src, open(dest, "wb") as dst:
            while block := src.read(1 << 20):
                written += len(block)
                if written > limit:  # headers can lie about sizes
                    raise PackageError(f"{zip_path}: unpacks to more than {limit / 1e9:.2f} GB")
                dst.write(block)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
        raise PackageError(
            f"{zip_path}: the member {info.filename!r} is damaged ({type(e).__name__}: {e}): "
            "get the package again"
        ) from e
    return written
