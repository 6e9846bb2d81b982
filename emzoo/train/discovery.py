"""Finding the use cases: every folder under ``training/`` registers its own with ``@register_usecase``.

The folders searched are those in ``EMZOO_TRAINING_DIR`` (several joined with ``os.pathsep``) or else
the ``training/`` folder beside the ``emzoo`` package (a source checkout). A use case folder is a
Python package (``__init__.py``) or holds a ``usecase.py``; folders whose name starts with ``_`` or
``.`` (such as ``_template``) are skipped. Each is imported once, as ``emzoo_usecases.<folder>``;
emzoo itself never imports ``training`` in any other way.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
import types
from pathlib import Path

from emzoo.errors import UsageError
from emzoo.train.usecase import UseCase, registered_usecases

ENV_VAR = "EMZOO_TRAINING_DIR"
_NAMESPACE = "emzoo_usecases"
_imported: dict[Path, str | None] = {}  # folder -> None (fine) or the import error
_folder_of: dict[str, Path] = {}  # use case name -> folder


def training_dirs() -> list[Path]:
    """The folders that hold use cases, in search order."""
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(p).expanduser().resolve() for p in env.split(os.pathsep) if p]
    return [Path(__file__).resolve().parents[2] / "training"]


def _candidates(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(
        d
        for d in root.iterdir()
        if d.is_dir()
        and not d.name.startswith(("_", "."))
        and ((d / "__init__.py").is_file() or (d / "usecase.py").is_file())
    )


def _import_folder(folder: Path) -> None:
    """Import one use case folder (its registration runs on import); remember failures."""
    if _NAMESPACE not in sys.modules:
        namespace = types.ModuleType(_NAMESPACE)
        namespace.__path__ = []
        sys.modules[_NAMESPACE] = namespace
    name = f"{_NAMESPACE}.{folder.name.replace('-', '_')}"
    package = (folder / "__init__.py").is_file()
    entry = folder / ("__init__.py" if package else "usecase.py")
    spec = importlib.util.spec_from_file_location(
        name, entry, submodule_search_locations=[str(folder)] if package else None
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    before = set(registered_usecases())
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        last = traceback.extract_tb(e.__traceback__)[-1]
        _imported[folder] = f"{type(e).__name__}: {e} ({Path(last.filename).name}:{last.lineno})"
        return
    _imported[folder] = None
    for added in set(registered_usecases()) - before:
        _folder_of[added] = folder


def discover() -> dict[str, type[UseCase]]:
    """Import every use case folder not imported yet; returns all registered use cases by name."""
    for root in training_dirs():
        for folder in _candidates(root):
            if folder not in _imported:
                _import_folder(folder)
    return registered_usecases()


def broken_usecases() -> dict[Path, str]:
    """Use case folders that failed to import, with the error."""
    discover()
    return {folder: error for folder, error in _imported.items() if error is not None}


def usecase_folder(name: str) -> Path | None:
    """The folder a discovered use case came from (None if it was registered in other code)."""
    return _folder_of.get(name)


def get_usecase(name: str) -> UseCase:
    """A fresh instance of the use case ``name``; the error lists the known ones."""
    known = discover()
    if name in known:
        return known[name]()
    broken = {f.name: err for f, err in broken_usecases().items()}
    if name in broken:
        raise UsageError(f"use case {name!r} cannot be imported: {broken[name]}")
    dirs = ", ".join(str(d) for d in training_dirs())
    listing = ", ".join(sorted(known)) or f"none found in {dirs}"
    raise UsageError(f"unknown use case {name!r} (known: {listing}); see 'emzoo train --list'")
