"""The modules this use case shares with ``particle_counting`` (data layout, split, LoG baseline).

Use case folders are imported by :mod:`emzoo.train.discovery` as ``emzoo_usecases.<folder>``, in name
order, so ``particle_counting`` is normally there already; otherwise it is imported here the same way.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

FOLDER = Path(__file__).resolve().parents[1] / "particle_counting"


def _package() -> str:
    here = __name__.rsplit(".", 2)[0]  # emzoo_usecases (or training, when imported as a package)
    name = f"{here}.particle_counting"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, FOLDER / "__init__.py", submodule_search_locations=[str(FOLDER)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return name


def counting_data() -> ModuleType:
    """``particle_counting.data``: image folders, YOLO boxes, the split, the input normalisation."""
    return importlib.import_module(f"{_package()}.data")


def counting_baseline() -> ModuleType:
    """``particle_counting.baseline``: the LoG blob detector tuned on the training split."""
    return importlib.import_module(f"{_package()}.baseline")
