"""``emzoo test``: does a package reproduce its own test tensors, in emzoo and in bioimageio.core?"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from emzoo.checks.core import run_core_test
from emzoo.errors import EmzooError
from emzoo.package.load import ModelPackage, open_model
from emzoo.runtime.predictor import Predictor


@dataclass(frozen=True)
class CheckResult:
    package: str
    name: str
    weights: str
    passed: bool
    message: str
    seconds: float


def reproduce(package: ModelPackage, weight_format: str, device: str = "cpu") -> tuple[bool, str]:
    """Run emzoo's runtime on the test inputs and compare with the test outputs."""
    spec = package.spec
    predictor = Predictor(package, weight_format=weight_format, device=device)
    inputs = {t.id: np.load(package.file(t.test_tensor)) for t in spec.inputs if t.test_tensor}
    outputs = predictor.run(inputs)
    ok, details = True, []
    for t in spec.outputs:
        if not t.test_tensor:
            continue
        tol = spec.tolerance(weight_format, t.id)
        result = tol.compare(outputs[t.id], np.load(package.file(t.test_tensor)))
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
    source: str, *, weight_formats: list[str] | None = None, run_bioimageio: bool = True, device: str = "cpu"
) -> list[CheckResult]:
    """Format validation, then for every weight format: emzoo's reproduction and bioimageio.core's test."""
    start = time.perf_counter()
    try:
        package = open_model(source, use_cache=False)
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
    for fmt in formats:
        results.append(
            _timed(source, "reproduce test outputs (emzoo)", fmt, lambda f=fmt: reproduce(package, f, device))
        )
        if run_bioimageio:
            results.append(
                _timed(source, "bioimageio.core test_model", fmt, lambda f=fmt: run_core_test(package.rdf, f))
            )
    return results
