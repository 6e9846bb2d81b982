"""One adapter per weight format; each imports its framework only when a model is loaded."""

from __future__ import annotations

from emzoo.errors import BackendError
from emzoo.package.load import ModelPackage
from emzoo.package.spec import Weights
from emzoo.runtime.backends.registry import Backend, Loader, register_backend, registered_loaders
from emzoo.runtime.settings import DeviceSpec

__all__ = ["Backend", "choose_weights", "list_backends", "load_backend", "register_backend"]


def _loaders() -> dict[str, Loader]:
    from emzoo.runtime.backends import onnx, torch_weights  # noqa: F401  (they register themselves)

    return registered_loaders()


def list_backends() -> list[str]:
    return list(_loaders())


def choose_weights(package: ModelPackage, weight_format: str | None = None) -> Weights:
    """The requested weights, or the first of onnx, torchscript, pytorch_state_dict present."""
    loaders = _loaders()
    spec = package.spec
    if weight_format is not None:
        if weight_format not in spec.weights:
            have = ", ".join(spec.weight_formats()) or "none"
            raise BackendError(
                f"{package.source} has no {weight_format} weights (it has: {have}); "
                "choose one of those with {weight_format=FORMAT}"
            )
        return spec.weights[weight_format]
    for fmt in spec.weight_formats():
        if fmt in loaders:
            return spec.weights[fmt]
    raise BackendError(
        f"{package.source} has weights only in {', '.join(spec.weight_formats())}, "
        f"which emzoo cannot run (it runs {', '.join(loaders)})"
    )


def load_backend(package: ModelPackage, weights: Weights, device: str | DeviceSpec = "auto") -> Backend:
    loaders = _loaders()
    loader = loaders.get(weights.format)
    if loader is None:
        raise BackendError(f"emzoo cannot run {weights.format} weights (it runs {', '.join(loaders)})")
    return loader(package, weights, DeviceSpec.parse(device))
