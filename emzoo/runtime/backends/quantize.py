"""Lower precision for ONNX weights on CPU: ``int8`` by static quantization, done once per model.

``int8`` quantizes the weights with onnxruntime's own tools
(:func:`onnxruntime.quantization.quantize_static`: QDQ format, per-channel int8 weights, uint8
activations: measured faster than int8 activations on this kind of CPU, where onnxruntime fuses QDQ
convolutions into its VNNI/AMX int8 kernels), after the exact rewrites of
:mod:`emzoo.runtime.backends.int8_graph` (up-sampling ConvTranspose as Conv + a channels-last pixel
shuffle, which run in int8 without layout changes; first convolutions of one-channel images kept fp32).
The activation ranges are calibrated on what the network really sees: the blocks the runtime feeds it
(normalised as it normalises them, at the block size it plans), of the package's test inputs or of the
images given as ``DeviceSpec.calibrate`` (at most :data:`CALIBRATION_TILES` blocks). The quantized model
and the deviation it shows on the package's test inputs are cached in emzoo's cache folder
(``precision/``), keyed by the weights' sha256, the calibration data and the onnxruntime version.

A package may declare the largest deviation it accepts (``config.emzoo.precision.max_deviation``, in
output units, compared with the largest absolute difference on its test inputs); int8 is refused
where the measured one is larger, with both numbers.

``bf16`` and ``fp16`` are refused on CPU, each with the reason (measured with onnxruntime 1.31 and torch
on a CPU with AVX512-BF16, AMX-BF16 and AVX512-FP16; see ``benchmarks/README.md``); on CUDA they run
torch weights under autocast (:mod:`emzoo.runtime.backends.precision`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from emzoo.atomic import atomic_path, write_text_atomic
from emzoo.cache import cache_dir, sha256_bytes, sha256_file
from emzoo.errors import BackendError, UsageError
from emzoo.package.load import ModelPackage
from emzoo.package.spec import ModelSpec, Weights
from emzoo.runtime.backends.registry import Backend
from emzoo.runtime.settings import DeviceSpec, TileSettings

log = logging.getLogger(__name__)

CALIBRATION_TILES = 16  # blocks of calibration data: 8-16 are enough for the activation ranges
RECIPE = "qdq-u8act-s8w-perchannel-minmax-3"  # changes when the quantization settings change

# why each precision does not run (None: it runs), per (precision, weight format, device)
_NO_BF16 = (
    "{precision=bf16}: onnxruntime {ort}'s CPU provider has no bfloat16 kernels for Conv, Relu or "
    "MaxPool (this CPU's AVX512-BF16/AMX-BF16 go unused), and torch's bfloat16 autocast is slower on the "
    "CPU than int8 (membrane U-Net, one 512 px block, 1 thread: 116 ms, onnxruntime fp32 110 ms, int8 "
    "50 ms): use {precision=int8}"
)
_NO_FP16 = (
    "{precision=fp16}: onnxruntime {ort}'s CPU provider runs fp16 convolutions on x86 in fp32 (it casts "
    "back: measured no faster, only less exact), and torch's float16 autocast on the CPU took 200x "
    "its bfloat16 time: use {precision=int8}"
)
_NO_INT8_CUDA = (
    "{precision=int8} runs ONNX weights on the CPU only (its quantized model is made for onnxruntime's "
    "CPU int8 kernels): on CUDA use {precision=fp16} or {precision=bf16} with torch weights, or "
    "{device=cpu}"
)


class Runner(Protocol):
    """What :func:`lower_precision` needs of a :class:`emzoo.runtime.predictor.Predictor`."""

    package: ModelPackage
    spec: ModelSpec
    weights: Weights
    backend: Backend
    requested_device: DeviceSpec
    settings: TileSettings

    def plan(self, inputs: Mapping[str, object]) -> object: ...

    def run(self, inputs: Mapping[str, object]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class PrecisionReport:
    """Which precision ran, calibrated on what, and how far it is from fp32 on the test inputs."""

    precision: str
    calibration: str = ""
    tiles: int = 0
    cached: bool = False
    deviation: dict[str, dict[str, float]] | None = None  # output id -> max_abs, mean_abs, relative

    def note(self) -> str:
        if self.precision == "fp32":
            return "precision: fp32"
        done = "cached" if self.cached else "quantized now"
        how = f"calibrated on {self.calibration} ({self.tiles} block(s)), {done}"
        return f"precision: {self.precision} ({how}); {describe_deviation(self.deviation)}"


def describe_deviation(deviation: Mapping[str, Mapping[str, float]] | None) -> str:
    """``prob: max abs 0.012, mean abs 0.0004 (1.2% of its range)`` per output, vs fp32."""
    if not deviation:
        return "deviation from fp32 not measured (the package has no test tensors)"
    parts = [
        f"{tid}: max abs {d['max_abs']:.3g}, mean abs {d['mean_abs']:.3g} "
        f"({100 * d['relative']:.2g}% of its range)"
        for tid, d in deviation.items()
    ]
    return "deviation from fp32 on the test input: " + "; ".join(parts)


def deviation(result: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """Largest and mean absolute difference, and the largest relative to ``expected``'s range."""
    result, expected = np.asarray(result, np.float64), np.asarray(expected, np.float64)
    if result.shape != expected.shape:
        raise BackendError(f"output of shape {result.shape}, expected {expected.shape}")
    diff = np.abs(result - expected)
    span = float(np.ptp(expected)) if expected.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    return {
        "max_abs": max_abs,
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "relative": max_abs / span if span > 0 else (0.0 if max_abs == 0 else math.inf),
    }


def refusal(precision: str, weight_format: str, device: str) -> str | None:
    """Why ``precision`` cannot run ``weight_format`` weights on ``device`` (None: it can)."""
    if precision == "fp32":
        return None
    ort = _ort_version()
    if device != "cpu":  # CUDA: bf16/fp16 as torch autocast (emzoo.runtime.backends.precision)
        if precision == "int8":
            return _NO_INT8_CUDA
        if weight_format in ("torchscript", "pytorch_state_dict"):
            return None
        return (
            f"{{precision={precision}}} runs torch weights on CUDA (autocast), these are {weight_format} "
            "(emzoo does not convert ONNX models to lower precision): choose {weight_format=torchscript} "
            "or pytorch_state_dict weights"
        )
    if precision == "bf16":
        return _NO_BF16.replace("{ort}", ort)
    if precision == "fp16":
        return _NO_FP16.replace("{ort}", ort)
    if weight_format != "onnx":
        return (
            f"{{precision={precision}}} quantizes ONNX weights, these are {weight_format}: "
            "choose {weight_format=onnx}"
        )
    return None


def lower_precision(runner: Runner) -> tuple[Backend, PrecisionReport]:
    """The backend to run at ``runner.requested_device.precision`` and what it is; refuses (one line)
    what this CPU and onnxruntime cannot do, and int8 beyond the package's declared deviation."""
    precision = runner.requested_device.precision
    if precision == "fp32":
        return runner.backend, PrecisionReport("fp32")
    why = refusal(precision, runner.weights.format, runner.backend.device)
    if why is not None:
        raise UsageError(why)
    from emzoo.runtime.backends.onnx import OnnxBackend

    fp32 = runner.backend
    source = Path(fp32.path)  # type: ignore[attr-defined]  # an OnnxBackend
    samples, calibration, identity = _calibration_samples(runner)
    weights_id = runner.weights.sha256 or sha256_file(source)
    key = sha256_bytes(f"{RECIPE}|{weights_id}|{identity}|{_ort_version()}".encode())[:32]
    folder = cache_dir("precision")
    model, record = folder / f"int8-{key}.onnx", folder / f"int8-{key}.json"
    cached = model.is_file() and record.is_file()
    if cached:
        facts = json.loads(record.read_text())
        backend = OnnxBackend(str(model), runner.requested_device)
    else:
        batches = _record_blocks(runner, samples)
        names = list(fp32.input_names)  # type: ignore[attr-defined]
        with atomic_path(model) as tmp:
            _quantize(source, tmp, batches, names)
        backend = OnnxBackend(str(model), runner.requested_device)
        facts = {
            "calibration": calibration,
            "tiles": len(batches),
            "deviation": measure_deviation(runner, backend),
            "onnxruntime": _ort_version(),
            "recipe": RECIPE,
        }
        write_text_atomic(record, json.dumps(facts, indent=1))
    report = PrecisionReport(precision, facts["calibration"], facts["tiles"], cached, facts["deviation"])
    check_allowed(runner.spec, report)
    return backend, report


def check_allowed(spec: ModelSpec, report: PrecisionReport) -> None:
    """Refuse ``report``'s precision where it deviates more than the package allows
    (``config.emzoo.precision.max_deviation``; ``why``, when the package gives it, is quoted)."""
    section = spec.emzoo.get("precision") or {}
    allowed = section.get("max_deviation") if isinstance(section, Mapping) else None
    if allowed is None:
        return
    if not report.deviation:
        raise UsageError(
            f"{{precision={report.precision}}}: the package allows a deviation of at most {allowed} "
            "(config.emzoo.precision.max_deviation) but has no test tensors to measure it on: "
            "use {precision=fp32}"
        )
    worst_id, worst = max(report.deviation.items(), key=lambda kv: kv[1]["max_abs"])
    if worst["max_abs"] > float(allowed):
        raise UsageError(
            f"{{precision={report.precision}}} is refused for this model: on its test input the output "
            f"{worst_id!r} deviates from fp32 by up to {worst['max_abs']:.3g} "
            f"(mean {worst['mean_abs']:.3g}), "
            f"more than the {allowed} its package allows (config.emzoo.precision.max_deviation)"
            + (f"; the package says: {section['why']}" if section.get("why") else "")
            + ": use {precision=fp32}"
        )


def _ort_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return "none"
    return onnxruntime.__version__


def package_test_inputs(package: ModelPackage) -> dict[str, np.ndarray]:
    """The package's test inputs, by input id (model axes); empty when it has none."""
    spec = package.spec
    if not all(t.test_tensor for t in spec.inputs if not t.optional):
        return {}
    return {t.id: np.load(package.file(t.test_tensor)) for t in spec.inputs if t.test_tensor}


def _calibration_samples(runner: Runner) -> tuple[list[dict[str, Any]], str, str]:
    """The calibration samples (input id -> array, model axes; read lazily: a callable), what they
    are in words, and their identity for the cache key."""
    paths = runner.requested_device.calibrate
    if not paths:
        spec = runner.spec
        files = [runner.package.file(t.test_tensor) for t in spec.inputs if t.test_tensor]
        if not files or len(spec.inputs) != len(files):
            raise UsageError(
                f"{{precision={runner.requested_device.precision}}} is calibrated on the package's test "
                "inputs, and this package has none: give images with {calibrate}"
            )
        identity = "test:" + ",".join(sha256_file(Path(f)) for f in files)
        return [{"test": True}], "the package's test input", identity
    if len(runner.spec.inputs) != 1:
        raise UsageError("{calibrate} takes images for one-input models only; leave it out")
    from emzoo.io import expand_inputs

    found = expand_inputs(list(paths), [])
    if not found:
        raise UsageError(f"{{calibrate}} {' '.join(paths)}: no images found there")
    parts = []
    for item in found:
        stat = item.path.stat()
        parts.append(f"{item.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
    identity = "files:" + sha256_bytes("\n".join(sorted(parts)).encode())
    shown = found[0].path.name + (f" and {len(found) - 1} more" if len(found) > 1 else "")
    return [{"file": item.path} for item in found], f"{len(found)} image(s): {shown}", identity


class _Enough(Exception):
    """Raised by the recorder once it holds enough blocks."""


class _Recorder:
    """A backend that keeps (copies of) the blocks it is given, then runs them on ``backend``."""

    def __init__(self, backend: Backend, limit: int):
        self.backend, self.limit = backend, limit
        self.format, self.device = backend.format, backend.device
        self.batches: list[list[np.ndarray]] = []

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(self.batches) >= self.limit:
            raise _Enough
        self.batches.append([np.array(x, dtype=np.float32) for x in inputs])
        return self.backend.run(inputs)


def _record_blocks(runner: Runner, samples: list[dict[str, Any]]) -> list[list[np.ndarray]]:
    """The blocks the runtime feeds the network for ``samples``: up to :data:`CALIBRATION_TILES`."""
    from emzoo.io import read_image
    from emzoo.runtime.layout import apply_layout, input_layout

    per_sample = max(1, math.ceil(CALIBRATION_TILES / len(samples)))
    fp32 = runner.backend
    batches: list[list[np.ndarray]] = []
    for sample in samples:
        if len(batches) >= CALIBRATION_TILES:
            break
        if "test" in sample:
            inputs = package_test_inputs(runner.package)
        else:
            image = read_image(sample["file"])
            tensor = runner.spec.inputs[0]
            data = np.asarray(image.data)
            inputs = {tensor.id: apply_layout(data, input_layout(data, image.meta.axes, tensor))}
        runner.plan(inputs)  # any receptive-field probe runs here, unrecorded
        recorder = _Recorder(fp32, min(per_sample, CALIBRATION_TILES - len(batches)))
        runner.backend = recorder
        try:
            runner.run(inputs)
        except _Enough:
            pass
        finally:
            runner.backend = fp32
        batches += recorder.batches
    return batches


def measure_deviation(runner: Runner, backend: Backend) -> dict[str, dict[str, float]] | None:
    """How far ``backend``'s outputs are from the package's (fp32) test outputs."""
    inputs = package_test_inputs(runner.package)
    expected = {t.id: t.test_tensor for t in runner.spec.outputs if t.test_tensor}
    if not inputs or not expected:
        return None
    fp32 = runner.backend
    runner.backend = backend
    try:
        outputs = runner.run(inputs)
    finally:
        runner.backend = fp32
    return {tid: deviation(outputs[tid], np.load(runner.package.file(f))) for tid, f in expected.items()}


class _QuietHint(logging.Filter):
    """Drops onnxruntime's advice to pre-process the model (its shapes are inferred well enough)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage() and "pre-processing" not in record.getMessage()


def _quantize(source: Path, target: Path, batches: list[list[np.ndarray]], names: list[str]) -> None:
    """Static QDQ quantization of ``source`` into ``target``, calibrated on ``batches``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([dict(zip(names, batch, strict=False)) for batch in batches])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    if not batches:
        raise BackendError("no calibration blocks were produced: give other images with {calibrate}")
    import onnx

    from emzoo.runtime.backends.int8_graph import keep_fp32, rewrite_conv_transpose, shapes_from_integers

    graph, _ = rewrite_conv_transpose(onnx.load(str(source)))
    root, quiet = logging.getLogger(), _QuietHint()
    root.addFilter(quiet)
    try:
        quantize_static(
            graph,
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=keep_fp32(graph),
        )
    except Exception as e:  # onnxruntime's tools fail with their own types; one line, the cause kept
        raise BackendError(f"onnxruntime could not quantize {source.name}: {type(e).__name__}: {e}") from e
    finally:
        root.removeFilter(quiet)
    quantized = onnx.load(str(target))
    if shapes_from_integers(quantized):
        onnx.save(quantized, str(target))
