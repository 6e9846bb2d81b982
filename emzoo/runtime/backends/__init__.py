"""One adapter per weight format; each imports its framework only when a model is loaded."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from emzoo.errors import BackendError
from emzoo.runtime.package import ModelPackage
from emzoo.runtime.spec import Weights


class Backend(Protocol):
    """Runs the network on whole batches: inputs and outputs in the model's axis order."""

    format: str
    device: str

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]: ...


Loader = Callable[[ModelPackage, Weights, str], Backend]
_LOADERS: dict[str, Loader] = {}


def register_backend(weight_format: str):
    """Decorator: ``fn(package, weights, device) -> Backend`` loads ``weight_format`` weights."""

    def deco(fn: Loader) -> Loader:
        _LOADERS[weight_format] = fn
        return fn

    return deco


def list_backends() -> list[str]:
    _load_builtin()
    return list(_LOADERS)


def choose_weights(package: ModelPackage, weight_format: str | None = None) -> Weights:
    """The requested weights, or the first of onnx, torchscript, pytorch_state_dict present."""
    _load_builtin()
    spec = package.spec
    if weight_format is not None:
        if weight_format not in spec.weights:
            have = ", ".join(spec.weight_formats()) or "none"
            raise BackendError(
                f"{package.source} has no {weight_format} weights (it has: {have}); "
                "choose one of those with --weights"
            )
        return spec.weights[weight_format]
    for fmt in spec.weight_formats():
        if fmt in _LOADERS:
            return spec.weights[fmt]
    raise BackendError(
        f"{package.source} has weights only in {', '.join(spec.weight_formats())}, "
        f"which emzoo cannot run (it runs {', '.join(_LOADERS)})"
    )


def load_backend(package: ModelPackage, weights: Weights, device: str = "auto") -> Backend:
    _load_builtin()
    loader = _LOADERS.get(weights.format)
    if loader is None:
        raise BackendError(f"emzoo cannot run {weights.format} weights (it runs {', '.join(_LOADERS)})")
    return loader(package, weights, device)


def parse_device(device: str) -> tuple[str, int]:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` -> (kind, index)."""
    text = (device or "auto").strip().lower()
    if text in ("auto", "cpu", "cuda"):
        return text, 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return "cuda", int(text[5:])
    raise BackendError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")


def _load_builtin() -> None:
    from emzoo.runtime.backends import onnx, torch_weights  # noqa: F401
