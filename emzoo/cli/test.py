"""``emzoo test MODEL...``: reproduce the test tensors in emzoo and in bioimageio.core."""

from __future__ import annotations

import sys

import click

from emzoo.cli.options import device_option


def _table(results) -> list[str]:
    rows = [("check", "weights", "result", "seconds", "detail")]
    rows += [
        (r.name, r.weights, "pass" if r.passed else "FAIL", f"{r.seconds:.1f}", r.message) for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4] for row in rows
    ]


@click.command("test")
@click.argument("models", nargs=-1, required=True)
@click.option("--weights", "weight_formats", multiple=True, help="Test only this weight format (repeatable).")
@device_option
@click.option("--no-bioimageio", is_flag=True, help="Skip bioimageio.core's test_model (faster).")
@click.option(
    "--junit",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the results as JUnit XML (for CI dashboards).",
)
def command(models, weight_formats, device, no_bioimageio, junit):
    """Check that each MODEL reproduces its own test outputs, for every weight format it has.

    Runs emzoo's runtime on the package's test inputs, compares with its test outputs within the
    package's reproducibility tolerance, then runs bioimageio.core's official test_model.
    Exit code 1 if any check fails.
    """
    from emzoo.checks.testing import test_package

    results = []
    for source in models:
        found = test_package(
            source,
            weight_formats=list(weight_formats) or None,
            run_bioimageio=not no_bioimageio,
            device=device,
        )
        results += found
        click.echo(f"{source}: {'passed' if all(r.passed for r in found) else 'FAILED'}")
        for line in _table(found):
            click.echo(f"  {line}")
    if junit:
        from emzoo.checks.junit import write_junit

        write_junit(results, junit)
    if not all(r.passed for r in results):
        sys.exit(1)
