"""emzoo: a model zoo and runtime for deep learning on electron microscopy images.

``import emzoo`` stays light: torch, onnxruntime and bioimageio are imported only when needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emzoo.version import __version__

if TYPE_CHECKING:
    from emzoo.package.load import ModelPackage, open_model
    from emzoo.runtime.predictor import Predictor, predict

_LAZY = {
    "open_model": "emzoo.package.load",
    "ModelPackage": "emzoo.package.load",
    "Predictor": "emzoo.runtime.predictor",
    "predict": "emzoo.runtime.predictor",
}

__all__ = ["ModelPackage", "Predictor", "__version__", "open_model", "predict"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emzoo' has no attribute {name!r}")
