"""TorchScript and pytorch_state_dict weights through PyTorch (optional: ``pip install torch``)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import shutil
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


AUTOCAST = {"bf16": "bfloat16", "fp16": "float16"}  # --precision -> torch dtype under autocast
TORCH_FORMATS = ("torchscript", "pytorch_state_dict")


class TorchBackend:
    """A torch module on ``target`` (``cpu``, ``cuda:N``); ``precision`` bf16/fp16 runs it under
    autocast. On CUDA the blocks go through pinned host memory with asynchronous copies, the outputs
    come back once per batch; on CPU the same code runs with pinning off."""

    def __init__(self, module, torch, target: str, weight_format: str, *, precision: str = "fp32"):
        self.module = module.eval()
        self.torch = torch
        self.target = target
        self.device = "cuda" if target.startswith("cuda") else "cpu"
        self.format = weight_format
        self.precision = precision
        self._block_bytes: dict[tuple, int] = {}

    def with_precision(self, precision: str) -> TorchBackend:
        """The same module, run at ``precision`` (``fp32``, or ``bf16``/``fp16`` under autocast)."""
        return TorchBackend(self.module, self.torch, self.target, self.format, precision=precision)

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        torch, pin = self.torch, self.device == "cuda"
        tensors = to_device(torch, inputs, self.target, pin=pin)
        with torch.inference_mode(), self._autocast():
            out = self.module(*tensors)
        return to_host(torch, [out] if isinstance(out, torch.Tensor) else list(out), pin=pin)

    def _autocast(self):
        torch = self.torch
        if self.precision not in AUTOCAST:
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=getattr(torch, AUTOCAST[self.precision]))

    # -- memory (emzoo.runtime.batching.MemoryGauge): measured on CUDA only ----------------------

    def free_bytes(self) -> int | None:
        """Free device memory, counting what torch holds cached but unused."""
        if self.device != "cuda":
            return None
        cuda = self.torch.cuda
        free, _ = cuda.mem_get_info(self.target)
        return int(free + cuda.memory_reserved(self.target) - cuda.memory_allocated(self.target))

    def block_bytes(self, shapes: Sequence[tuple[int, ...]]) -> int | None:
        """Peak device memory of one block of input ``shapes`` (one probe run of zeros, once)."""
        if self.device != "cuda":
            return None
        key = tuple(tuple(s) for s in shapes)
        if key not in self._block_bytes:
            cuda = self.torch.cuda
            cuda.synchronize(self.target)
            cuda.reset_peak_memory_stats(self.target)
            base = cuda.memory_allocated(self.target)
            self.run([np.zeros(s, np.float32) for s in shapes])
            self._block_bytes[key] = int(cuda.max_memory_allocated(self.target) - base)
        return self._block_bytes[key]


def to_device(torch, arrays: Sequence[np.ndarray], target: str, *, pin: bool) -> list:
    """``arrays`` as tensors on ``target``; ``pin``: copied through pinned host memory, asynchronously."""
    tensors = [torch.from_numpy(np.ascontiguousarray(x)) for x in arrays]
    if pin:
        return [t.pin_memory().to(target, non_blocking=True) for t in tensors]
    return [t.to(target) for t in tensors]


def to_host(torch, tensors: Sequence, *, pin: bool) -> list[np.ndarray]:
    """``tensors`` as numpy arrays (bf16/fp16 as float32); ``pin``: copied into pinned host memory
    asynchronously, waited for once."""
    tensors = [t.detach() for t in tensors]
    tensors = [t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in tensors]
    if not pin:
        return [t.cpu().numpy() for t in tensors]
    hosts = []
    for t in tensors:
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        host.copy_(t, non_blocking=True)
        hosts.append(host)
    if tensors:
        torch.cuda.current_stream(tensors[0].device).synchronize()
    return [h.numpy() for h in hosts]


def torch_formats(package: ModelPackage) -> list[str]:
    """The package's torch weight formats that may run (code trusted where they need it), in order."""
    spec = package.spec
    return [
        f
        for f in spec.weight_formats()
        if f in TORCH_FORMATS and is_trusted(package.root, spec.weights[f], trusted=package.trust_code)
    ]


def cuda_weight_format(package: ModelPackage, device: DeviceSpec) -> str | None:
    """The torch weights to run when the user names none and the model runs on CUDA; None: emzoo's
    usual order (onnx first).

    On CUDA torch is preferred to onnxruntime's CUDA provider: published comparisons find onnxruntime's
    CUDA provider often slower than PyTorch (cuDNN through torch) for convolutional U-Nets, so neither
    is assumed faster: ``benchmarks/gpu_check.sh`` measures both on the same model (item 3).
    ``{weight_format=onnx}`` keeps onnxruntime. ``auto`` looks for CUDA only where an NVIDIA driver
    is installed, so that CPU machines never import torch for it."""
    if device.kind == "cpu" or (device.kind == "auto" and not nvidia_driver()):
        return None
    formats = torch_formats(package)
    if not formats:
        return None
    try:
        import torch
    except ImportError:
        return None
    return formats[0] if torch.cuda.is_available() else None


def nvidia_driver() -> bool:
    """Is an NVIDIA driver installed (Linux's /proc entry, or nvidia-smi on the path)?"""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


@register_backend("torchscript")
def load_torchscript(package: ModelPackage, weights: Weights, device: DeviceSpec) -> TorchBackend:
    torch = import_torch("torchscript", package)
    path = package.verified_file(weights.source, weights.sha256)
    dev = torch_device(torch, device)
    try:
        module = torch.jit.load(str(path), map_location=dev)
    except Exception as e:
        raise BackendError(f"PyTorch cannot load the TorchScript file {weights.source}: {e}") from e
    return TorchBackend(module, torch, dev, "torchscript")


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
    return TorchBackend(network.to(dev), torch, dev, "pytorch_state_dict")


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
