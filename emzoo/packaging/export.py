"""Export a trained ``torch.nn.Module`` to ONNX and TorchScript and prove that the exports agree.

Three weight formats come out of one module:

* ``onnx``: one self-contained file (opset 17 by default), dynamic batch and spatial axes, written by
  the TorchScript-based exporter (``dynamo=False``): torch 2.13's default exporter needs
  ``onnxscript``, which emzoo does not install.
* ``torchscript``: ``torch.jit.script`` (``method="script"``), ``torch.jit.trace`` (``"trace"``), or
  scripting with a fall-back to tracing (``"auto"``, the default). Scripted modules keep their
  control flow; traced ones are checked on a second input size so that baked-in shapes show up.
* ``pytorch_state_dict``: the state dict plus the self-contained architecture source file that
  rebuilds the network (re-imported from its copy here, as a consumer would).

After export the same real input runs through every format; :class:`ExportMismatchError` reports
the largest absolute difference and the tolerance when one differs from the module by more.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import logging
import shutil
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from emzoo.errors import EmzooError

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
WeightFormat = Literal["onnx", "torchscript", "pytorch_state_dict"]
ALL_FORMATS: tuple[WeightFormat, ...] = ("onnx", "torchscript", "pytorch_state_dict")


class PackagingError(EmzooError):
    """A model cannot be packaged: the message names the problem and the fix."""


class ExportMismatchError(PackagingError):
    """An exported weight format computes something else than the PyTorch module."""


@dataclass(frozen=True)
class Architecture:
    """Where the network class lives: a self-contained source file, the callable's name, its kwargs."""

    source: Path
    callable: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParityCheck:
    """One comparison of an exported format with the module on one input."""

    weight_format: str
    input_shape: tuple[int, ...]
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance


@dataclass(frozen=True)
class ExportedWeights:
    """The files written by :func:`export_weights` and the parity checks they passed."""

    files: dict[str, Path]  # weight format -> file
    architecture: Architecture | None  # the copied source file (for pytorch_state_dict)
    opset_version: int
    torchscript_method: str | None
    torch_version: str
    checks: tuple[ParityCheck, ...]


@dataclass(frozen=True)
class Tolerance:
    """Exported output ``o`` matches the module's ``r`` when ``max|o - r| <= atol + rtol * max|r|``."""

    atol: float = 1e-4
    rtol: float = 1e-4

    def limit(self, reference: np.ndarray) -> float:
        return self.atol + self.rtol * float(np.max(np.abs(reference), initial=0.0))


def import_torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - the train extra is installed where this runs
        raise PackagingError(
            "packaging needs PyTorch: pip install torch, or the [train] extra of emzoo"
        ) from e
    return torch


def _as_list(out: Any) -> list[np.ndarray]:
    torch = import_torch()
    if isinstance(out, torch.Tensor):
        out = [out]
    elif isinstance(out, Mapping):
        out = list(out.values())
    return [np.asarray(o.detach().cpu().numpy() if isinstance(o, torch.Tensor) else o) for o in out]


def forward(module, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The module's outputs (numpy) for numpy inputs, in inference mode on the CPU."""
    torch = import_torch()
    tensors = [torch.from_numpy(np.ascontiguousarray(x)) for x in inputs]
    with torch.inference_mode():
        return _as_list(module(*tensors))


def frozen_copy(module):
    """A CPU copy in eval mode (the caller's module is left as it was)."""
    return copy.deepcopy(module).cpu().eval()


def default_dynamic_axes(ndim: int) -> list[int]:
    """Every dimension but the channel (dim 1) may change size: batch and space."""
    return [d for d in range(ndim) if d != 1]


def export_onnx(
    module,
    example: Sequence[np.ndarray],
    path: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Sequence[int]] | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write ``module`` as one self-contained ONNX file with dynamic batch and spatial axes."""
    torch = import_torch()
    import onnx

    if opset < 17:
        raise PackagingError(f"ONNX opset {opset} is too old: use 17 or newer")
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in example)
    if dynamic_axes is None:
        outs = forward(module, example)
        dynamic_axes = {
            **{n: default_dynamic_axes(x.ndim) for n, x in zip(input_names, example, strict=True)},
            **{n: default_dynamic_axes(o.ndim) for n, o in zip(output_names, outs, strict=False)},
        }
    names = {name: {d: f"{name}_dim{d}" for d in dims} for name, dims in dynamic_axes.items()}
    for name, dims in dynamic_axes.items():
        for d in dims:
            names[name][d] = "batch" if d == 0 else names[name][d]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation of the TorchScript-based exporter, tracer warnings
        try:
            torch.onnx.export(
                module,
                tensors,
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=names,
                do_constant_folding=True,
            )
        except Exception as e:
            raise PackagingError(
                f"torch.onnx.export failed ({type(e).__name__}: {e}); make forward() use only "
                "operations that ONNX supports, or leave onnx out of the weight formats"
            ) from e
    model = onnx.load(str(path), load_external_data=False)
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise PackagingError(
            f"the ONNX export stores {len(external)} tensors in external files (a model over 2 GB); "
            "emzoo packages need one self-contained file"
        )
    onnx.checker.check_model(model)
    return path


def export_torchscript(
    module, example: Sequence[np.ndarray], path: Path, *, method: Literal["auto", "script", "trace"] = "auto"
) -> str:
    """Write ``module`` as TorchScript; returns the method used (``"script"`` or ``"trace"``)."""
    torch = import_torch()
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in example)
    compiled, used = None, method
    if method in ("auto", "script"):
        try:
            compiled, used = torch.jit.script(module), "script"
        except Exception as e:
            if method == "script":
                raise PackagingError(
                    f"torch.jit.script failed: {str(e).strip().splitlines()[0]}; make forward() "
                    "scriptable (type annotations, no zip over a ModuleList and a list) or use "
                    "torchscript='trace'"
                ) from e
            log.warning("torch.jit.script failed (%s); tracing instead", str(e).strip().splitlines()[0])
    if compiled is None:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            try:
                compiled, used = torch.jit.trace(module, tensors, check_trace=False), "trace"
            except Exception as e:
                raise PackagingError(f"torch.jit.trace failed ({type(e).__name__}: {e})") from e
    torch.jit.save(compiled, str(path))
    return used


def load_architecture(arch: Architecture) -> Callable[..., Any]:
    """Import the callable from its source file alone, as bioimageio.core and emzoo's runtime do."""
    digest = hashlib.sha256(str(arch.source.resolve()).encode()).hexdigest()[:12]
    name = f"emzoo_export_arch_{digest}"
    spec = importlib.util.spec_from_file_location(name, arch.source)
    if spec is None or spec.loader is None:
        raise PackagingError(f"cannot import the architecture file {arch.source}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise PackagingError(
            f"the architecture file {arch.source.name} does not import on its own ({type(e).__name__}: "
            f"{e}); the package copies only this one file, so it must import nothing but torch and "
            "the standard library"
        ) from e
    finally:
        sys.modules.pop(name, None)
    try:
        return getattr(module, arch.callable)
    except AttributeError:
        raise PackagingError(f"{arch.source.name} defines no {arch.callable!r}") from None


def _run_onnx(path: Path, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise PackagingError(
            "checking the ONNX export needs onnxruntime: pip install onnxruntime, or the [cpu] extra of "
            "emzoo (or leave onnx out of the weight formats)"
        ) from e

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    feed = {i.name: np.ascontiguousarray(x) for i, x in zip(session.get_inputs(), inputs, strict=True)}
    return [np.asarray(o) for o in session.run(None, feed)]


def _run_torchscript(path: Path, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    torch = import_torch()
    return forward(torch.jit.load(str(path), map_location="cpu").eval(), inputs)


def _run_state_dict(path: Path, arch: Architecture, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    torch = import_torch()
    network = load_architecture(arch)(**arch.kwargs)
    network.load_state_dict(torch.load(str(path), map_location="cpu", weights_only=True))
    return forward(network.eval(), inputs)


def compare_outputs(
    weight_format: str,
    reference: Sequence[np.ndarray],
    actual: Sequence[np.ndarray],
    tolerance: Tolerance,
    input_shape: tuple[int, ...],
) -> ParityCheck:
    """Check one format's outputs against the module's; :class:`ExportMismatchError` when they differ."""
    if len(actual) < len(reference):
        raise ExportMismatchError(
            f"the {weight_format} export returns {len(actual)} outputs, the module {len(reference)}"
        )
    worst = ParityCheck(weight_format, input_shape, 0.0, float("inf"))
    for i, (r, a) in enumerate(zip(reference, actual, strict=False)):
        if r.shape != a.shape:
            raise ExportMismatchError(
                f"the {weight_format} export gives output {i} the shape {a.shape} for input "
                f"{input_shape}, PyTorch {r.shape}; the export fixed a size that should stay dynamic "
                "(use torchscript='script', or make the shape logic traceable)"
            )
        diff = float(np.max(np.abs(a.astype(np.float64) - r.astype(np.float64)), initial=0.0))
        limit = tolerance.limit(r)
        if not np.isfinite(diff) or diff > limit:
            raise ExportMismatchError(
                f"the {weight_format} export differs from the PyTorch module on a real input of shape "
                f"{input_shape}: max |difference| = {diff:.3g} on output {i}, tolerance {limit:.3g} "
                f"(atol {tolerance.atol:g} + rtol {tolerance.rtol:g} x max|output| {np.max(np.abs(r)):.3g}). "
                "The module probably computes something different when exported (Python-side "
                "control flow or randomness, train-mode layers, in-place tricks): make forward() "
                "depend only on tensor operations and call it in eval mode, or leave "
                f"{weight_format} out of the weight formats"
            )
        if diff >= worst.max_abs_diff:
            worst = ParityCheck(weight_format, input_shape, diff, limit)
    return worst


def export_weights(
    module,
    example: np.ndarray | Sequence[np.ndarray],
    out_dir: Path,
    *,
    architecture: Architecture | None = None,
    formats: Sequence[str] = ALL_FORMATS,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("output",),
    dynamic_axes: Mapping[str, Sequence[int]] | None = None,
    opset: int = DEFAULT_OPSET,
    torchscript: Literal["auto", "script", "trace"] = "auto",
    tolerance: Tolerance | None = None,
    check_inputs: Sequence[Sequence[np.ndarray]] = (),
) -> ExportedWeights:
    """Export ``module`` to ``formats`` in ``out_dir`` and check each against the module.

    ``example`` is a real network input (already pre-processed, with its batch axis); it and each of
    ``check_inputs`` (e.g. another size, or a batch of two) run through the module and through every
    export. ``pytorch_state_dict`` needs ``architecture`` (a self-contained source file).

    Examples
    --------
    >>> from emzoo.architectures.unet import UNet  # doctest: +SKIP
    >>> arch = Architecture(Path("emzoo/architectures/unet.py"), "UNet", {"depth": 2, "features": 4})
    >>> net = UNet(depth=2, features=4)  # doctest: +SKIP
    >>> exported = export_weights(net, x, Path("out"), architecture=arch)  # doctest: +SKIP
    """
    torch = import_torch()
    tolerance = tolerance or Tolerance()
    unknown = [f for f in formats if f not in ALL_FORMATS]
    if unknown:
        raise PackagingError(f"unknown weight format(s) {unknown}: choose from {', '.join(ALL_FORMATS)}")
    if "pytorch_state_dict" in formats and architecture is None:
        raise PackagingError(
            "pytorch_state_dict weights need the architecture (source file, callable, kwargs); "
            "give architecture=Architecture(...) or leave pytorch_state_dict out of the formats"
        )
    example = [example] if isinstance(example, np.ndarray) else list(example)
    example = [np.ascontiguousarray(x, dtype=np.float32) for x in example]
    out_dir.mkdir(parents=True, exist_ok=True)
    network = frozen_copy(module)
    files: dict[str, Path] = {}
    arch_copy = None
    method = None

    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    if "pytorch_state_dict" in formats:
        assert architecture is not None
        if not architecture.source.is_file():
            raise PackagingError(f"the architecture source {architecture.source} does not exist")
        arch_copy = Architecture(
            out_dir / architecture.source.name, architecture.callable, dict(architecture.kwargs)
        )
        shutil.copyfile(architecture.source, arch_copy.source)
        files["pytorch_state_dict"] = out_dir / "weights.pt"
        torch.save(state, files["pytorch_state_dict"])
    if "torchscript" in formats:
        files["torchscript"] = out_dir / "weights_torchscript.pt"
        method = export_torchscript(network, example, files["torchscript"], method=torchscript)
    if "onnx" in formats:
        files["onnx"] = out_dir / "weights.onnx"
        export_onnx(
            network,
            example,
            files["onnx"],
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset=opset,
        )

    runners: dict[str, Callable[[Sequence[np.ndarray]], list[np.ndarray]]] = {
        "onnx": lambda xs: _run_onnx(files["onnx"], xs),
        "torchscript": lambda xs: _run_torchscript(files["torchscript"], xs),
        "pytorch_state_dict": lambda xs: _run_state_dict(files["pytorch_state_dict"], arch_copy, xs),
    }
    checks = []
    for inputs in [example, *[[np.ascontiguousarray(x, np.float32) for x in c] for c in check_inputs]]:
        reference = forward(network, inputs)
        for fmt in files:
            checks.append(compare_outputs(fmt, reference, runners[fmt](inputs), tolerance, inputs[0].shape))
    for c in checks:
        log.info(
            "%s parity on %s: max |diff| %.2e <= %.2e",
            c.weight_format,
            c.input_shape,
            c.max_abs_diff,
            c.tolerance,
        )
    return ExportedWeights(
        files=files,
        architecture=arch_copy,
        opset_version=opset,
        torchscript_method=method,
        torch_version=str(torch.__version__).split("+")[0],
        checks=tuple(checks),
    )
