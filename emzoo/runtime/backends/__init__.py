"""One adapter per weight format; each imports its framework only when a model is loaded."""

from __future__ import annotations

from emzoo.errors import BackendError
from emzoo.package.load import ModelPackage
from emzoo.package.spec import Weights
from emzoo.package.trust import is_trusted, refusal
from emzoo.runtime.backends.registry import Backend, Loader, register_backend, registered_loaders
from emzoo.runtime.settings import DeviceSpec

__all__ = ["Backend", "choose_weights", "code_refusal", "list_backends", "load_backend", "register_backend"]


def _loaders() -> dict[str, Loader]:
    from emzoo.runtime.backends import onnx, torch_weights  # noqa: F401  (they register themselves)

    return registered_loaders()


def list_backends() -> list[str]:
    return list(_loaders())


def code_refusal(package: ModelPackage, weights: Weights) -> str | None:
    """Why ``weights`` may not run (they need package code the user has not trusted), or None."""
    if is_trusted(package.root, weights, trusted=package.trust_code):
        return None
    others = [f for f in package.spec.weight_formats() if package.spec.weights[f].architecture is None]
    return refusal(package.source, weights, [f for f in others if f in _loaders()])


def choose_weights(package: ModelPackage, weight_format: str | None = None) -> Weights:
    """The requested weights, or the first of onnx, torchscript, pytorch_state_dict present; weights
    that need the package's own code only when it is trusted (:mod:`emzoo.package.trust`)."""
    loaders = _loaders()
    spec = package.spec
    if weight_format is not None:
        if weight_format not in spec.weights:
            have = ", ".join(spec.weight_formats()) or "none"
            raise BackendError(
                f"{package.source} has no {weight_format} weights (it has: {have}); "
                "choose one of those with {weight_format=FORMAT}"
            )
        chosen = spec.weights[weight_format]
    else:
        runnable = [spec.weights[f] for f in spec.weight_formats() if f in loaders]
        if not runnable:
            raise BackendError(
                f"{package.source} has weights only in {', '.join(spec.weight_formats())}, "
                f"which emzoo cannot run (it runs {', '.join(loaders)})"
            )
        chosen = next((w for w in runnable if code_refusal(package, w) is None), runnable[0])
    why = code_refusal(package, chosen) if chosen.format in loaders else None
    if why is not None:
        raise BackendError(why)
    return chosen


def load_backend(package: ModelPackage, weights: Weights, device: str | DeviceSpec = "auto") -> Backend:
    loaders = _loaders()
    loader = loaders.get(weights.format)
    if loader is None:
        raise BackendError(f"emzoo cannot run {weights.format} weights (it runs {', '.join(loaders)})")
    why = code_refusal(package, weights)
    if why is not None:
        raise BackendError(why)
    return loader(package, weights, DeviceSpec.parse(device))
