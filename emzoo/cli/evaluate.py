"""``emzoo evaluate MODEL IMAGES LABELS``: the use case's metrics of a package on labelled images."""

from __future__ import annotations

import json
from pathlib import Path

import click

from emzoo.cli.options import weights_option
from emzoo.errors import UsageError


@click.command("evaluate")
@click.argument("model")
@click.argument("images", type=click.Path(exists=True))
@click.argument("labels", type=click.Path(exists=True))
@click.option(
    "--usecase", default=None, help="Use case whose metrics apply (default: the one the package names)."
)
@weights_option()
@click.option(
    "-o",
    "--output",
    default=None,
    type=click.Path(dir_okay=False),
    help="Also save the report (every image's metrics) as JSON.",
)
def command(model, images, labels, usecase, weight_format, output):
    """Run MODEL on every image in IMAGES, compare with the label of the same name in LABELS, and print
    the use case's metrics (per image and mean)."""
    from emzoo.train.evaluation import evaluate_folders

    if output:  # a report that cannot be written is refused before the model runs
        folder = Path(output).absolute().parent
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir():
            raise UsageError(f"--output {output}: {existing} is a file, not a folder; give another path")
    report = evaluate_folders(model, Path(images), Path(labels), usecase=usecase, weight_format=weight_format)
    names = list(report["metrics"])
    click.echo(
        f"{report['usecase']} metrics of {model} [{report['weights']}] on {report['sample_count']} images"
    )
    width = max(len(Path(s["image"]).name) for s in report["samples"]) + 2
    click.echo("image".ljust(width) + "".join(n.rjust(20) for n in names))
    for s in report["samples"]:
        click.echo(Path(s["image"]).name.ljust(width) + "".join(f"{s['metrics'][n]:20.4f}" for n in names))
    click.echo("mean".ljust(width) + "".join(f"{report['metrics'][n]:20.4f}" for n in names))
    if output:
        from emzoo.atomic import write_text_atomic

        write_text_atomic(output, json.dumps(report, indent=2))
        click.echo(f"report saved to {output}", err=True)
