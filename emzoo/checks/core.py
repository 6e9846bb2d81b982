"""bioimageio.core's official ``test_model``, run quietly and summarised in one line: the one wrapper
that ``emzoo test`` and the packager both call."""

from __future__ import annotations

from pathlib import Path

from emzoo.errors import BackendError
from emzoo.package.validation import format_loc, quiet_bioimageio

MAX_FAILURES_SHOWN = 3


# weight formats whose test imports and runs the package's own Python code (its architecture)
CODE_FORMATS = ("pytorch_state_dict",)


def run_core_test(
    source: str | Path,
    weight_format: str,
    *,
    devices: list[str] | None = None,
    code_trusted: bool = False,
) -> tuple[bool, str]:
    """``(passed, summary)`` of bioimageio.core's ``test_model`` for one weight format of ``source``
    (an rdf.yaml or a zip); the summary names the failed checks and their fields.

    bioimageio.core imports the package's architecture for ``pytorch_state_dict`` weights: that
    test runs only with ``code_trusted`` (the caller has checked :mod:`emzoo.package.trust`)."""
    if weight_format in CODE_FORMATS and not code_trusted:
        raise BackendError(
            f"{source}: bioimageio.core's test of {weight_format} weights runs the package's own code, "
            "and it is not trusted ({trust_package_code})"
        )
    quiet_bioimageio()
    from bioimageio.core import test_model

    summary = test_model(source, weight_format=weight_format, devices=devices)
    failed = [d for d in summary.details if d.status == "failed"]
    if summary.status in ("passed", "valid-format") and not failed:
        return True, f"{len(summary.details)} checks passed"
    why = "; ".join(
        f"{d.name} ({format_loc(e.loc)}): {' '.join(str(e.msg).split())[:240]}"
        for d in failed[:MAX_FAILURES_SHOWN]
        for e in d.errors[:1]
    )
    return False, why or f"status {summary.status}"
