"""``emzoo test MODEL...``: reproduce the test tensors in emzoo and in bioimageio.core."""

from __future__ import annotations

import sys

import click

from emzoo.cli.options import device_option, flag_names, precision_option, trust_option

_RESULT = {True: "pass", False: "FAIL", None: "not run"}


def _table(results) -> list[str]:
    rows = [("check", "weights", "result", "seconds", "detail")]
    rows += [(r.name, r.weights, _RESULT[r.passed], f"{r.seconds:.1f}", r.message) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4] for row in rows
    ]


@click.command("test")
@click.argument("models", nargs=-1, required=True)
@click.option("--weights", "weight_formats", multiple=True, help="Test only this weight format (repeatable).")
@device_option
@precision_option
@trust_option
@click.option("--no-bioimageio", is_flag=True, help="Skip bioimageio.core's test_model (faster).")
@click.option(
    "--junit",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the results as JUnit XML (for CI dashboards).",
)
def command(models, weight_formats, device, precision, trust_package_code, no_bioimageio, junit):
    """Check that each MODEL reproduces its own test outputs, for every weight format it has.

    Runs emzoo's runtime on the package's test inputs, compares with its test outputs within the
    package's reproducibility tolerance, then runs bioimageio.core's official test_model.
    Exit code 1 if any check fails. Checks of pytorch_state_dict weights, which run the package's own
    code, are reported as not run unless the package is trusted (built by emzoo, in emzoo's zoo, or
    trusted with the option below). With --precision int8, emzoo's check runs the quantized model and
    reports its mismatch (max abs, mean abs, relative) with the fp32 test outputs.
    """
    from emzoo.runtime.settings import DeviceSpec

    spec = DeviceSpec.parse(device, precision=precision)  # impossible values: usage errors before any test
    device, precision = str(spec), spec.precision
    if precision != "fp32":
        from emzoo.runtime.backends.quantize import refusal

        # what this device cannot do with any weights is refused before any test
        kind = "cuda" if device.startswith("cuda") else "cpu"
        whys = [refusal(precision, fmt, kind) for fmt in ("onnx", "torchscript")]
        if all(whys):
            from emzoo.errors import UsageError

            raise UsageError(whys[0] if kind == "cpu" else whys[1])
    if junit:  # a report that cannot be written is refused before any test runs
        import os
        from pathlib import Path

        from emzoo.errors import UsageError

        folder = Path(junit).absolute().parent
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir():
            raise UsageError(f"--junit {junit}: {existing} is a file, not a folder; give another path")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UsageError(f"--junit {junit}: cannot write into {existing}; give another path")
    from emzoo.checks.testing import test_package

    results = []
    for source in models:
        found = test_package(
            source,
            weight_formats=list(weight_formats) or None,
            run_bioimageio=not no_bioimageio,
            device=device,
            trust_package_code=trust_package_code,
            names=flag_names(click.get_current_context().command),
            precision=precision,
        )
        results += found
        skipped = sum(r.passed is None for r in found)
        verdict = "FAILED" if any(r.passed is False for r in found) else "passed"
        click.echo(f"{source}: {verdict}" + (f" ({skipped} checks not run)" if skipped else ""))
        for line in _table(found):
            click.echo(f"  {line}")
    if junit:
        from emzoo.checks.junit import write_junit

        write_junit(results, junit)
    if any(r.passed is False for r in results):
        sys.exit(1)
