"""The table of weight-format loaders: ``@register_backend("onnx")`` on a plain loader function."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from emzoo.package.load import ModelPackage
from emzoo.package.spec import Weights
from emzoo.runtime.settings import DeviceSpec


class Backend(Protocol):
    """Runs the network on whole batches: inputs and outputs in the model's axis order."""

    format: str
    device: str

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]: ...


Loader = Callable[[ModelPackage, Weights, DeviceSpec], Backend]
_LOADERS: dict[str, Loader] = {}


def register_backend(weight_format: str):
    """Decorator: ``fn(package, weights, device) -> Backend`` loads ``weight_format`` weights."""

    def deco(fn: Loader) -> Loader:
        _LOADERS[weight_format] = fn
        return fn

    return deco


def registered_loaders() -> dict[str, Loader]:
    """Weight format -> loader, for the formats registered so far."""
    return dict(_LOADERS)
