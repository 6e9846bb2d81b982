"""``emzoo evaluate MODEL IMAGES LABELS``: the use case's metrics of a package on labelled images."""

from __future__ import annotations

import json
from pathlib import Path

import click

from emzoo.cli.options import device_option, precision_option, weights_option
from emzoo.errors import UsageError


@click.command("evaluate")
@click.argument("model")
@click.argument("images", type=click.Path(exists=True))
@click.argument("labels", type=click.Path(exists=True))
@click.option(
    "--usecase", default=None, help="Use case whose metrics apply (default: the one the package names)."
)
@weights_option()
@device_option
@precision_option
@click.option(
    "--calibrate",
    multiple=True,
    type=click.Path(exists=True),
    help="With --precision int8: calibrate on these images (files or folders) instead of the package's "
    "test input.",
)
@click.option(
    "--tta/--no-tta",
    default=None,
    help="Test-time augmentation: average the outputs over the flips and 90-degree turns the model's axes "
    "allow. Default: as the package asks (config.emzoo.tta), else off.",
)
@click.option(
    "-o",
    "--output",
    default=None,
    type=click.Path(dir_okay=False),
    help="Also save the report (every image's metrics) as JSON.",
)
def command(model, images, labels, usecase, weight_format, device, precision, calibrate, tta, output):
    """Run MODEL on every image in IMAGES, compare with the label of the same name in LABELS, and print
    the use case's metrics (per image and mean).

    For counting models the labels are YOLO boxes (.txt: 'class cx cy w h', normalised) or point CSVs
    (a header with y and x, optionally diameter_px); detected centres are matched one-to-one with the
    labelled particles within half a box's smaller side (5 px for points without a diameter): precision,
    recall, F1, count and relative count error, and box AP@0.5 when the model predicts sizes.

    With --precision int8 the metrics are those of the quantized model: run it twice to see what the
    lower precision costs on your data."""
    from emzoo.runtime.settings import DeviceSpec
    from emzoo.train.evaluation import evaluate_folders

    spec = DeviceSpec.parse(device, precision=precision, calibrate=calibrate)

    if output:  # a report that cannot be written is refused before the model runs
        folder = Path(output).absolute().parent
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir():
            raise UsageError(f"--output {output}: {existing} is a file, not a folder; give another path")
    report = evaluate_folders(
        model, Path(images), Path(labels), usecase=usecase, weight_format=weight_format, device=spec, tta=tta
    )
    names = list(report["metrics"])
    click.echo(
        f"{report['usecase']} metrics of {model} [{report['weights']}, {report['precision']}"
        f"{', tta' if report['tta'] else ''}] "
        f"on {report['sample_count']} images"
    )
    width = max(len(Path(s["image"]).name) for s in report["samples"]) + 2
    widths = [max(len(n), 8) + 2 for n in names]
    click.echo("image".ljust(width) + "".join(n.rjust(w) for n, w in zip(names, widths, strict=True)))
    rows = [(Path(s["image"]).name, s["metrics"]) for s in report["samples"]]
    for label, metrics in [*rows, ("mean", report["metrics"])]:
        cells = "".join(f"{metrics[n]:{w}.4f}" for n, w in zip(names, widths, strict=True))
        click.echo(label.ljust(width) + cells)
    if output:
        from emzoo.atomic import write_text_atomic

        write_text_atomic(output, json.dumps(report, indent=2))
        click.echo(f"report saved to {output}", err=True)
