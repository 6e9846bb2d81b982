"""Turn the user's INPUT arguments (files, folders, globs) into a list of image files."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from emzoo.errors import UsageError
from emzoo.io.lookup import find_reader


@dataclass(frozen=True)
class InputFile:
    """An input image and its path relative to the argument it came from (kept in the output tree)."""

    path: Path
    relative: Path


def _is_image(path: Path) -> bool:
    return not path.name.startswith(".") and find_reader(path) is not None


def _walk(folder: Path) -> list[InputFile]:
    found: list[InputFile] = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir() and find_reader(child) is None:
            found.extend(InputFile(f.path, child.name / f.relative) for f in _walk(child))
        elif _is_image(child):
            found.append(InputFile(child, Path(child.name)))
    return found


def expand_inputs(arguments: list[str | Path]) -> list[InputFile]:
    """Files are taken as they are, folders recursively (images only), globs expanded.

    A folder that a reader claims as one image (a Zarr store) counts as one file. Raises
    :class:`UsageError` when an argument matches nothing.
    """
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
                if p.is_dir() and find_reader(p) is None:
                    files.extend(InputFile(f.path, p.name / f.relative) for f in _walk(p))
                elif _is_image(p):
                    files.append(InputFile(p, _relative_to(p, root)))
            continue
        path = Path(text)
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
        if path.is_dir() and find_reader(path) is None:
            found = _walk(path)
            if not found:
                raise UsageError(f"{path}: the folder holds no image that emzoo reads")
            files.extend(found)
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
        key = f.path.resolve()
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
