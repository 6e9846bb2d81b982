"""How much memory a process may still take, and the checks that refuse an image before allocating it.

Readers compare what a header claims with what the file holds (a claim beyond the file is a truncated
or corrupt file) and, where they would decompress into memory, with :func:`available_memory`; the
file driver does the same before predicting an image in memory. No psutil: ``MemAvailable`` of
``/proc/meminfo`` (else ``sysconf``'s available pages), capped by a cgroup limit and ``RLIMIT_AS``.

>>> gigabytes(3 * 1024**3)
'3.2 GB'
"""

from __future__ import annotations

import os
from pathlib import Path

from emzoo.errors import InputError

_CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def gigabytes(n: int | float) -> str:
    return f"{n / 1e9:.1f} GB"


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_room() -> int | None:
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            return max(0, int(limit) - usage)
    return None


def _address_space_room() -> int | None:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


def available_memory() -> int | None:
    """Bytes this process can still allocate (None when nothing tells)."""
    found = [n for n in (_meminfo_available(), _cgroup_room(), _address_space_room()) if n is not None]
    return min(found) if found else None


def check_memory(subject: str, needed: int, hint: str = "") -> None:
    """Raise :class:`InputError` when ``needed`` bytes are more than :func:`available_memory`."""
    available = available_memory()
    if available is not None and needed > available:
        raise InputError(
            f"{subject} needs about {gigabytes(needed)} of memory, {gigabytes(available)} are available"
            + (f": {hint}" if hint else "")
        )


def check_file_holds(path: Path, needed: int, what: str) -> None:
    """Raise :class:`InputError` when the file is smaller than the ``needed`` bytes its header claims."""
    size = path.stat().st_size
    if needed > size:
        raise InputError(
            f"{path}: file is smaller than its header says ({size} bytes, {needed} needed for {what}): "
            "truncated, or a corrupt header?"
        )
