"""What the training tests share: the modules of a use case beside its ``usecase.py``."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


def sibling(uc: Any, name: str) -> ModuleType:
    """The module ``name`` (``data``, ``network``...) of the folder that holds the use case ``uc``, as the
    registry imported it (``emzoo_usecases.<folder>.<name>``), so tests see the objects training uses."""
    return importlib.import_module(f"{type(uc).__module__.rsplit('.', 1)[0]}.{name}")
