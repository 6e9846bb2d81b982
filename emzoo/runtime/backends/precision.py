"""The network at the precision a device asks for: ``bf16``/``fp16`` as torch autocast (torch weights on
CUDA, here), ``int8`` by static quantization of ONNX weights on CPU
(:mod:`emzoo.runtime.backends.quantize`); what a device cannot run is refused, with the reason, by
:func:`~emzoo.runtime.backends.quantize.refusal`.

Autocast runs convolutions and matrix products in the lower precision and keeps reductions in fp32
(``torch.autocast``); the outputs come back as float32. Its deviation from fp32 is measured on the
package's test input each time the model is loaded (one run: on a GPU a fraction of a second), and
a package's ``config.emzoo.precision.max_deviation`` refuses it as it refuses int8.
"""

from __future__ import annotations

from dataclasses import dataclass

from emzoo.errors import BackendError
from emzoo.runtime.backends import quantize
from emzoo.runtime.backends.quantize import (
    PrecisionReport,
    Runner,
    check_allowed,
    describe_deviation,
    measure_deviation,
    refusal,
)
from emzoo.runtime.backends.registry import Backend
from emzoo.runtime.backends.torch_weights import AUTOCAST, TorchBackend


@dataclass(frozen=True)
class AutocastReport(PrecisionReport):
    """A :class:`PrecisionReport` of a torch autocast run (nothing is calibrated or cached)."""

    device: str = "cuda"

    def note(self) -> str:
        how = f"torch autocast on {self.device}"
        return f"precision: {self.precision} ({how}); {describe_deviation(self.deviation)}"


def lower_precision(runner: Runner) -> tuple[Backend, PrecisionReport]:
    """The backend to run at ``runner.requested_device.precision`` and what it is: autocast for
    bf16/fp16 where :func:`refusal` allows them, else as :mod:`quantize` decides (fp32, int8, or a
    one-line refusal)."""
    precision = runner.requested_device.precision
    if precision in AUTOCAST and refusal(precision, runner.weights.format, runner.backend.device) is None:
        return autocast_precision(runner)
    return quantize.lower_precision(runner)


def autocast_precision(runner: Runner, precision: str | None = None) -> tuple[TorchBackend, AutocastReport]:
    """``runner``'s torch backend under autocast at ``precision`` (default: the requested one), with its
    deviation from fp32 on the package's test input; refused beyond the package's declared deviation.

    Runs wherever torch autocasts (the tests call it on CPU with bfloat16); which device and weights
    may use it is :func:`refusal`'s decision, made before this is called."""
    precision = precision or runner.requested_device.precision
    fp32 = runner.backend
    if not isinstance(fp32, TorchBackend) or precision not in AUTOCAST:
        raise BackendError(
            f"{{precision={precision}}} runs torch weights under autocast, not {fp32.format} weights"
        )
    low = fp32.with_precision(precision)
    report = AutocastReport(precision, deviation=measure_deviation(runner, low), device=low.target)
    check_allowed(runner.spec, report)
    return low, report
