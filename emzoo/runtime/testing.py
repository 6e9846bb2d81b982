"""``emzoo test``: does a package reproduce its own test tensors, in emzoo and in bioimageio.core?"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from emzoo.errors import EmzooError
from emzoo.runtime.package import ModelPackage, open_model
from emzoo.runtime.predictor import Predictor


@dataclass(frozen=True)
class CheckResult:
    package: str
    name: str
    weights: str
    passed: bool
    message: str
    seconds: float


def compare(
    actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float, max_ppm: float
) -> tuple[bool, str]:
    """bioimage.io's rule: elements with |a - e| > atol + rtol |e| may be at most ``max_ppm`` per million."""
    if actual.shape != expected.shape:
        return False, f"shape {actual.shape}, expected {expected.shape}"
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    diff = np.abs(a - e)
    mismatched = int(np.count_nonzero(diff > atol + rtol * np.abs(e)))
    ppm = mismatched / max(e.size, 1) * 1e6
    detail = (
        f"max |diff| {diff.max(initial=0):.2e}, {mismatched} of {e.size} elements off "
        f"(rtol {rtol:g}, atol {atol:g})"
    )
    return ppm <= max_ppm, detail


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
        good, detail = compare(
            outputs[t.id],
            np.load(package.file(t.test_tensor)),
            tol.rtol,
            tol.atol,
            tol.mismatched_per_million,
        )
        ok &= good
        details.append(f"{t.id}: {detail}")
    return ok, "; ".join(details)


def bioimageio_core_test(package: ModelPackage, weight_format: str) -> tuple[bool, str]:
    """bioimageio.core's official ``test_model`` for one weight format."""
    from emzoo.runtime.validation import _quiet_bioimageio, format_loc

    _quiet_bioimageio()
    from bioimageio.core import test_model

    summary = test_model(package.rdf, weight_format=weight_format)
    failed = [d for d in summary.details if d.status == "failed"]
    if summary.status in ("passed", "valid-format") and not failed:
        return True, f"{len(summary.details)} checks passed"
    messages = []
    for d in failed[:3]:
        errs = "; ".join(" ".join(str(e.msg).split())[:200] for e in d.errors[:2])
        messages.append(f"{d.name} ({format_loc(d.loc)}): {errs}")
    return False, " | ".join(messages) or f"status {summary.status}"


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
                _timed(
                    source, "bioimageio.core test_model", fmt, lambda f=fmt: bioimageio_core_test(package, f)
                )
            )
    return results
