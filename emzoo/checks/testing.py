"""``emzoo test``: does a package reproduce its own test tensors, in emzoo and in bioimageio.core?"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from emzoo.checks.core import run_core_test
from emzoo.errors import EmzooError, Names, render
from emzoo.package.load import ModelPackage, open_model
from emzoo.runtime.backends import code_refusal
from emzoo.runtime.backends.quantize import deviation, refusal
from emzoo.runtime.predictor import Predictor
from emzoo.runtime.settings import DeviceSpec, TileSettings

# the framework each weight format needs, and the extra of emzoo that installs it
FRAMEWORKS = {"onnx": "onnxruntime", "torchscript": "torch", "pytorch_state_dict": "torch"}
EXTRAS = {"onnxruntime": "cpu", "torch": "train"}


def missing_framework(weight_format: str) -> str | None:
    """The framework ``weight_format`` needs when it is not installed (e.g. ``torch`` after the plain
    install, which brings onnxruntime only), else None."""
    module = FRAMEWORKS.get(weight_format)
    if module is None:
        return None
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else module


@dataclass(frozen=True)
class CheckResult:
    package: str
    name: str
    weights: str
    passed: bool | None  # None: not run (the message says why)
    message: str
    seconds: float


def reproduce(
    package: ModelPackage, weight_format: str, device: str = "cpu", precision: str = "fp32"
) -> tuple[bool, str]:
    """Run emzoo's runtime on the test inputs and compare with the test outputs; at a ``precision``
    other than fp32 the mismatch with the (fp32) test outputs is reported, and it passes unless the
    package's declared maximum deviation refuses that precision (``config.emzoo.precision``)."""
    spec = package.spec
    predictor = Predictor(
        package,
        weight_format=weight_format,
        device=DeviceSpec.parse(device, precision=precision),
        settings=TileSettings(tta=False),  # the test tensors are the network's own, unaugmented outputs
    )
    inputs = {t.id: np.load(package.file(t.test_tensor)) for t in spec.inputs if t.test_tensor}
    outputs = predictor.run(inputs)
    ok, details = True, []
    for t in spec.outputs:
        if not t.test_tensor:
            continue
        expected = np.load(package.file(t.test_tensor))
        if precision != "fp32":
            d = deviation(outputs[t.id], expected)
            details.append(
                f"{t.id}: {precision} vs the fp32 test output: max abs {d['max_abs']:.3g}, "
                f"mean abs {d['mean_abs']:.3g}, relative {d['relative']:.3g} (of the output's range)"
            )
            continue
        tol = spec.tolerance(weight_format, t.id)
        result = tol.compare(outputs[t.id], expected)
        ok &= result.ok
        details.append(f"{t.id}: {result.detail}")
    return ok, "; ".join(details)


def _timed(package: str, name: str, weights: str, fn: Callable[[], tuple[bool, str]]) -> CheckResult:
    start = time.perf_counter()
    try:
        ok, message = fn()
    except EmzooError as e:
        ok, message = False, str(e)
    except Exception as e:  # a broken package may fail anywhere in a framework: report, don't crash
        ok, message = False, f"{type(e).__name__}: {e}"
    return CheckResult(package, name, weights, ok, message, time.perf_counter() - start)


def test_package(
    source: str,
    *,
    weight_formats: list[str] | None = None,
    run_bioimageio: bool = True,
    device: str = "cpu",
    trust_package_code: bool = False,
    names: Names | None = None,
    precision: str = "fp32",
) -> list[CheckResult]:
    """Format validation, then for every weight format: emzoo's reproduction and bioimageio.core's test.

    Weights that need the package's own code (``pytorch_state_dict``) are tested only when it is
    trusted (``trust_package_code``, see :mod:`emzoo.package.trust`); else both their checks are
    reported as not run (``passed=None``), and bioimageio.core is not called for them. ``names``
    shows the parameters in those reasons (the CLI's flags; see :func:`emzoo.errors.render`).
    Weights whose framework is not installed (torch after the plain install) are not run either,
    with the install command as the reason, unless they were asked for in ``weight_formats``.
    ``precision`` (int8...): emzoo's check runs at it and reports its mismatch with the test outputs."""
    start = time.perf_counter()
    try:
        package = open_model(source, use_cache=False, trust_package_code=trust_package_code)
    except EmzooError as e:
        return [
            CheckResult(source, "format (bioimageio.spec)", "-", False, str(e), time.perf_counter() - start)
        ]
    spec = package.spec
    results = [
        CheckResult(
            source,
            "format (bioimageio.spec)",
            "-",
            True,
            f"{spec.name}, format {spec.format_version}",
            time.perf_counter() - start,
        )
    ]
    formats = weight_formats or spec.weight_formats()
    checks = ["reproduce test outputs (emzoo)"] + ["bioimageio.core test_model"] * run_bioimageio
    for fmt in formats:
        absent = missing_framework(fmt)
        if absent is not None and fmt not in (weight_formats or ()):
            reason = f"skipped (pip install {absent}, or the [{EXTRAS[absent]}] extra of emzoo)"
            results += [CheckResult(source, c, fmt, None, reason, 0.0) for c in checks]
            continue
        why = code_refusal(package, spec.weights[fmt]) if fmt in spec.weights else None
        if why is None and precision != "fp32":  # int8: ONNX on CPU; bf16/fp16: torch on CUDA
            why = refusal(precision, fmt, "cuda" if str(device).startswith("cuda") else "cpu")
        if why is not None:
            results += [
                CheckResult(source, c, fmt, None, f"not run: {render(why, names)}", 0.0) for c in checks
            ]
            continue
        check = "reproduce test outputs (emzoo)" + (f" at {precision}" if precision != "fp32" else "")
        results.append(_timed(source, check, fmt, lambda f=fmt: reproduce(package, f, device, precision)))
        if run_bioimageio:
            results.append(
                _timed(
                    source,
                    "bioimageio.core test_model",
                    fmt,
                    lambda f=fmt: run_core_test(package.rdf, f, code_trusted=True),
                )
            )
    return results
