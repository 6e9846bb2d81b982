"""Atomic writes: a temporary sibling of the target, renamed into place only when complete.

* **Temporary siblings** are named ``.NAME.partial-PID`` (hidden, same folder, so the final rename
  stays on one file system). A process killed while writing (``kill -9``) leaves one behind: the next
  write of the same target removes the partials of processes that are no longer alive on this host
  (:func:`remove_stale_partials`).
* **A full disk** (``ENOSPC``/``EDQUOT``, or the short write numpy reports as ``N requested and M
  written``) raises :class:`NoSpaceError` (``no space left on FOLDER: N MB needed``) and leaves no
  partial file.
* **Output locks** (:func:`output_lock`): ``.NAME.lock`` beside the target, created atomically with
  ``O_EXCL`` and holding ``{"pid", "host"}`` of its holder, so that two runs never write into the same
  resumable output at once; a lock whose process is gone (same host) is taken over.

Standard library only (and :mod:`emzoo.errors`), so that any module (runtime, packaging, training)
can use it without start-up cost.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from emzoo.errors import EmzooError

_PARTIAL = re.compile(r"\.(.+)\.partial-(\d+)")
_SWEEP_SECONDS = 30.0
_SWEPT: dict[str, tuple[float, dict[str, list[str]]]] = {}
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")
_MB = 1024**2


class NoSpaceError(EmzooError):
    """The file system of an output is full (or over quota)."""


class LockedError(EmzooError):
    """Another live run holds the lock of an output."""


def temporary_sibling(path: Path) -> Path:
    """A hidden name in the same folder (so the final rename stays on one file system)."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def pid_alive(pid: int) -> bool:
    """Is process ``pid`` running on this host? (A process of another user counts as running.)"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _stale_partials(folder: Path) -> dict[str, list[str]]:
    """Target name -> the partials of dead processes in ``folder``: the folder is listed once per
    :data:`_SWEEP_SECONDS` per process (not once per write: a folder may hold a million chunk records)."""
    key = str(folder)
    swept = _SWEPT.get(key)
    if swept is not None and time.monotonic() - swept[0] < _SWEEP_SECONDS:
        return swept[1]
    found: dict[str, list[str]] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                m = _PARTIAL.fullmatch(entry.name)
                if m is not None and int(m.group(2)) != os.getpid() and not pid_alive(int(m.group(2))):
                    found.setdefault(m.group(1), []).append(entry.name)
    except OSError:
        pass
    _SWEPT[key] = (time.monotonic(), found)
    return found


def remove_stale_partials(path: str | Path) -> list[Path]:
    """Remove the temporary siblings (``.NAME.partial-PID``) of ``path`` left by processes that are no
    longer alive; returns what was removed. Partials of live processes (other writers, maybe on other
    hosts of a shared file system) and those of other targets stay."""
    path = Path(path)
    removed = []
    for name in _stale_partials(path.parent).pop(path.name, []):
        candidate = path.parent / name
        if candidate.exists() or candidate.is_symlink():
            _remove(candidate)
            removed.append(candidate)
    return removed


def is_disk_full(error: BaseException) -> bool:
    """Is ``error`` a full disk or quota (also numpy's ``N requested and M written`` short write)?"""
    if not isinstance(error, OSError):
        return False
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return error.errno is None and bool(_SHORT_WRITE.search(str(error)))


def _free_bytes(folder: Path) -> int | None:
    for candidate in (folder, *folder.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def no_space(folder: str | Path, needed: int | None = None) -> NoSpaceError:
    """The error for a full disk at ``folder``: ``no space left on FOLDER: N MB needed, M MB free``."""
    folder = Path(folder)
    free = _free_bytes(folder)
    parts = []
    if needed:
        parts.append(f"{max(1, round(needed / _MB))} MB needed")
    if free is not None:
        parts.append(f"{free // _MB} MB free")
    detail = f": {', '.join(parts)}" if parts else ""
    return NoSpaceError(f"no space left on {folder}{detail}; free some space or write elsewhere")


@contextmanager
def atomic_path(path: str | Path, *, needed: int | None = None) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write (a file or a folder): renamed to ``path`` when the
    block succeeds, removed when it fails, so that nothing half-written appears at ``path``.

    Stale partials of ``path`` (of dead processes) are removed first. A full disk raises
    :class:`NoSpaceError` (``needed``: the bytes about to be written, for the message)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if is_disk_full(e):
            raise no_space(path.parent, needed) from e
        raise
    remove_stale_partials(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        if is_disk_full(e):
            _remove(tmp)
            raise no_space(path.parent, needed) from e
        raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    data = text.encode("utf-8")
    with atomic_path(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


# ------------------------------------------------------------------------------------------- locks


def lock_path(path: str | Path) -> Path:
    """The lock file of ``path``: ``.NAME.lock`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def _read_holder(lock: Path) -> dict | None:
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _ours(holder: dict | None) -> bool:
    return (
        holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()
    )


def _stale(holder: dict | None, lock: Path) -> bool:
    """A lock of a dead process on this host (or unreadable and older than a minute)."""
    if holder is None:
        try:
            return time.time() - lock.stat().st_mtime > 60
        except OSError:
            return False
    if holder.get("host") != socket.gethostname():
        return False  # its process cannot be checked from here
    pid = int(holder.get("pid", 0) or 0)
    return pid != os.getpid() and not pid_alive(pid)


class OutputLock:
    """The lock of one output while a run writes it (see :func:`output_lock`)."""

    def __init__(self, target: str | Path):
        self.target = Path(target)
        self.path = lock_path(self.target)
        self.held = False

    def acquire(self) -> OutputLock:
        content = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_holder(self.path)
                if _ours(holder):
                    self.held = True  # this process's own lock (left by an earlier failed write)
                    return self
                if not _stale(holder, self.path):
                    raise self._busy(holder) from None
                self._take_over(holder)
                continue
            try:
                os.write(fd, content.encode())
            except OSError as e:
                os.close(fd)
                self.path.unlink(missing_ok=True)
                if is_disk_full(e):
                    raise no_space(self.path.parent) from e
                raise
            os.close(fd)
            self.held = True
            return self
        raise self._busy(_read_holder(self.path))

    def _take_over(self, holder: dict | None) -> None:
        """Move a stale lock aside (atomically: one process wins); put it back if it was not the stale
        lock we read (another process took it over in between)."""
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if _read_holder(aside) != holder:
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
        aside.unlink(missing_ok=True)

    def _busy(self, holder: dict | None) -> LockedError:
        who = "another process"
        if holder is not None:
            who = f"emzoo process {holder.get('pid')}"
            if holder.get("host") != socket.gethostname():
                who += f" on {holder.get('host')}"
        return LockedError(
            f"{self.target}: {who} is writing this output (lock {self.path}): wait for it to finish, or "
            "stop it; remove the lock file only if that run is gone"
        )

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if _ours(_read_holder(self.path)):
            self.path.unlink(missing_ok=True)


@contextmanager
def output_lock(*targets: str | Path) -> Iterator[list[OutputLock]]:
    """Hold the locks of ``targets`` (in a fixed order) for the block: a second run that wants one of
    them raises :class:`LockedError` naming the holder's PID; stale locks of dead processes are taken
    over."""
    locks: list[OutputLock] = []
    try:
        for target in sorted({Path(t) for t in targets}):
            locks.append(OutputLock(target).acquire())
        yield locks
    finally:
        for lock in reversed(locks):
            lock.release()
