"""Turn the user's INPUT arguments (files, folders, globs) into a list of image files.

Folders are searched recursively, following symbolic links, but each folder only once: a link back to
a folder searched already (a loop), a link that loops on itself and a broken link are skipped with a
note, and the images beside them are still found. Files that are no image emzoo reads are counted
by suffix: a note says what was passed over (``skipped 2 files emzoo does not read (.txt)``).
"""

from __future__ import annotations

import errno
import glob
import os
from dataclasses import dataclass
from pathlib import Path

from emzoo.errors import UsageError, literal
from emzoo.io.lookup import find_reader, supported_suffixes


@dataclass(frozen=True)
class InputFile:
    """An input image and its path relative to the argument it came from (kept in the output tree)."""

    path: Path
    relative: Path


def _is_image(path: Path) -> bool:
    return not path.name.startswith(".") and find_reader(path) is not None


def _link_problem(path: Path) -> str | None:
    """Why a symbolic link cannot be followed (a loop, a missing target), or None."""
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"a broken symbolic link ({e.strerror})"
    return None


class _Walk:
    """One search of folders: each real folder once (links may point back up the tree)."""

    def __init__(self, notes: list[str]):
        self.notes = notes
        self.seen: set[tuple[int, int]] = set()
        self.unread: dict[str, int] = {}  # suffix -> files that are no image emzoo reads

    def folder(self, folder: Path) -> list[InputFile]:
        try:
            st = os.stat(folder)
            children = sorted(folder.iterdir())
        except OSError as e:
            self.notes.append(f"skipped {folder}: cannot be listed ({e.strerror})")
            return []
        key = (st.st_dev, st.st_ino)
        if key in self.seen:
            self.notes.append(f"skipped {folder}: a link to a folder searched already (a link loop)")
            return []
        self.seen.add(key)
        found: list[InputFile] = []
        for child in children:
            if child.name.startswith("."):
                continue
            problem = _link_problem(child)
            if problem is not None:
                self.notes.append(f"skipped {child}: {problem}")
            elif child.is_dir() and find_reader(child) is None:
                found.extend(InputFile(f.path, child.name / f.relative) for f in self.folder(child))
            elif _is_image(child):
                found.append(InputFile(child, Path(child.name)))
            elif child.is_file():
                suffix = child.suffix.lower() or "no suffix"
                self.unread[suffix] = self.unread.get(suffix, 0) + 1
        return found

    def unread_files(self) -> str:
        """``3 files (.txt, .xyz)``: what the search passed over ('' when nothing)."""
        n = sum(self.unread.values())
        if not n:
            return ""
        return f"{n} file{'s' if n > 1 else ''} ({', '.join(sorted(self.unread))})"


def _walk(folder: Path, notes: list[str] | None = None, *, required: bool = False) -> list[InputFile]:
    """The images under ``folder``; ``required``: none is a usage error (saying what is there)."""
    notes = notes if notes is not None else []
    walk = _Walk(notes)
    found = walk.folder(folder)
    unread = walk.unread_files()
    if not found and required:
        holds = f"it holds {unread}" if unread else "it holds no files"
        known = ", ".join(sorted(supported_suffixes()))
        raise UsageError(
            f"{literal(folder)}: the folder holds no image that emzoo reads ({holds}; emzoo reads {known})"
        )
    if unread:
        notes.append(f"skipped {unread} in {literal(folder)} that emzoo does not read")
    return found


def expand_inputs(arguments: list[str | Path], notes: list[str] | None = None) -> list[InputFile]:
    """Files are taken as they are, folders recursively (images only), globs expanded.

    A folder that a reader claims as one image (a Zarr store) counts as one file. Raises
    :class:`UsageError` when an argument matches nothing. What was skipped on the way (link loops,
    broken links, unreadable folders) is added to ``notes``.
    """
    notes = notes if notes is not None else []
    files: list[InputFile] = []
    for arg in arguments:
        text = str(arg)
        if any(ch in text for ch in "*?[") and not Path(text).exists():
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise UsageError(f"{text}: the pattern matches no file")
            root = _glob_root(text)
            for m in matches:
                p = Path(m)
                problem = _link_problem(p)
                if problem is not None:
                    notes.append(f"skipped {p}: {problem}")
                elif p.is_dir() and find_reader(p) is None:
                    files.extend(InputFile(f.path, p.name / f.relative) for f in _walk(p, notes))
                elif _is_image(p):
                    files.append(InputFile(p, _relative_to(p, root)))
            continue
        path = Path(text)
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
        if path.is_dir() and find_reader(path) is None:
            files.extend(_walk(path, notes, required=True))
        else:
            files.append(InputFile(path, Path(path.name)))
    return _unique(files)


def _glob_root(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard: outputs keep paths relative to it."""
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))]]
    return Path(*fixed) if fixed else Path(".")


def _relative_to(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return Path(path.name)


def _unique(files: list[InputFile]) -> list[InputFile]:
    seen: set[Path] = set()
    out = []
    for f in files:
        try:
            key = f.path.resolve()
        except (OSError, RuntimeError):  # a link loop: RuntimeError before Python 3.13
            key = Path(os.path.abspath(f.path))
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
