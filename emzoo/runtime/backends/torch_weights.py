"""TorchScript and pytorch_state_dict weights through PyTorch (optional: ``pip install torch``)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emzoo.errors import BackendError
from emzoo.package.load import ModelPackage
from emzoo.package.spec import Architecture, Weights
from emzoo.package.trust import is_trusted, refusal
from emzoo.runtime.backends.registry import register_backend
from emzoo.runtime.settings import DeviceSpec


def other_formats(package: ModelPackage, *exclude: str) -> list[str]:
    """The package's weight formats (in emzoo's order) but ``exclude``: what a hint may suggest."""
    return [f for f in package.spec.weight_formats() if f not in exclude]


def import_torch(weight_format: str, package: ModelPackage | None = None):
    try:
        import torch
    except ImportError as e:
        hint = ""
        if package is not None and "onnx" in package.spec.weights:
            hint = " (or run the package's onnx weights with {weight_format=onnx})"
        raise BackendError(
            f"{weight_format} weights need PyTorch, which is not installed: pip install torch "
            f"(or the [train] extra of emzoo){hint}"
        ) from e
    return torch


def torch_device(torch, device: DeviceSpec) -> str:
    kind, index = device.kind, device.index or 0
    if kind == "cuda" and not torch.cuda.is_available():
        raise BackendError("{device=cuda} was asked for, but PyTorch sees no CUDA device")
    if kind == "cuda" or (kind == "auto" and torch.cuda.is_available()):
        return f"cuda:{index}"
    return "cpu"


class TorchBackend:
    def __init__(self, module, torch, device: str, weight_format: str):
        self.module = module.eval()
        self.torch = torch
        self.device = device
        self.format = weight_format

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        tensors = [torch.from_numpy(np.ascontiguousarray(x)).to(self.device) for x in inputs]
        with torch.inference_mode():
            out = self.module(*tensors)
        if isinstance(out, torch.Tensor):
            out = [out]
        return [o.detach().cpu().numpy() for o in out]


@register_backend("torchscript")
def load_torchscript(package: ModelPackage, weights: Weights, device: DeviceSpec) -> TorchBackend:
    torch = import_torch("torchscript", package)
    path = package.verified_file(weights.source, weights.sha256)
    dev = torch_device(torch, device)
    try:
        module = torch.jit.load(str(path), map_location=dev)
    except Exception as e:
        raise BackendError(f"PyTorch cannot load the TorchScript file {weights.source}: {e}") from e
    return TorchBackend(module, torch, "cuda" if dev.startswith("cuda") else "cpu", "torchscript")


def _architecture(package: ModelPackage, arch: Architecture):
    """The network class/function named by the package (a file in it, or an importable module)."""
    if arch.source:
        path = package.verified_file(arch.source, arch.sha256)
        name = "emzoo_arch_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise BackendError(f"cannot import the architecture file {arch.source}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[name]
                raise BackendError(f"the architecture file {arch.source} fails to import: {e}") from e
    else:
        try:
            module = importlib.import_module(str(arch.import_from))
        except ImportError as e:
            others = [f for f in other_formats(package) if package.spec.weights[f].architecture is None]
            instead = f", or use the package's {' or '.join(others)} weights" if others else ""
            raise BackendError(
                f"the architecture module {arch.import_from!r} is not installed ({e}); install it{instead}"
            ) from e
    try:
        return getattr(module, arch.callable)
    except AttributeError:
        raise BackendError(f"{arch.source or arch.import_from} has no {arch.callable!r}") from None


@register_backend("pytorch_state_dict")
def load_state_dict(package: ModelPackage, weights: Weights, device: DeviceSpec) -> TorchBackend:
    torch = import_torch("pytorch_state_dict", package)
    if weights.architecture is None:
        raise BackendError(f"{package.source}: pytorch_state_dict weights without an architecture")
    if not is_trusted(package.root, weights, trusted=package.trust_code):  # load_backend checks too
        raise BackendError(refusal(package.source, weights, []))
    path = package.verified_file(weights.source, weights.sha256)
    dev = torch_device(torch, device)
    state = load_state(torch, path, dev, f"{package.source}: {weights.source}")
    factory = _architecture(package, weights.architecture)
    try:
        network = factory(**weights.architecture.kwargs)
        network.load_state_dict(state, strict=weights.strict)
    except Exception as e:
        why = " ".join(str(e).split())
        raise BackendError(f"cannot build the network from {Path(weights.source).name}: {why}") from e
    return TorchBackend(
        network.to(dev), torch, "cuda" if dev.startswith("cuda") else "cpu", "pytorch_state_dict"
    )


def load_state(torch, path: Path, device: str, name: str):
    """The tensors of a state-dict file: unpickled with ``weights_only=True`` (never code: a pickle
    that would call anything but tensor constructors is refused), errors in one line."""
    try:
        return torch.load(str(path), map_location=device, weights_only=True)
    except Exception as e:
        lines = [" ".join(line.split()) for line in str(e).splitlines() if line.strip()]
        why = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), None)
        if why is not None:
            raise BackendError(
                f"{name} is not a plain state dict: it asks to run code on loading ({why}); emzoo "
                "unpickles weights only as tensors (weights_only=True), so it was not loaded"
            ) from None
        first = lines[0] if lines else repr(e)
        raise BackendError(f"{name}: PyTorch cannot read it as a state dict: {first}") from e
