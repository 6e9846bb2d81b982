"""``emzoo package RUN_DIR -o model.zip``: turn a training run into a self-validating bioimage.io package."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

FORMATS = ("onnx", "torchscript", "pytorch_state_dict")


@click.command("package")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="A .zip file, or a folder (e.g. zoo_models/NAME) for an unzipped package. "
    "[default: RUN_DIR/model.zip]",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The data folder, if not where config.json says (test split, sample image, statistics).",
)
@click.option(
    "--weights",
    "weight_formats",
    multiple=True,
    type=click.Choice(FORMATS),
    help="Write only these weight formats (repeatable). [default: all three]",
)
@click.option(
    "--test-size",
    type=int,
    default=None,
    help="Edge of the test tensors (px). [default: 256, or the network's smallest input when larger]",
)
@click.option("--halo", type=int, default=None, help="Output halo (px). [default: measured receptive field]")
@click.option("--model-version", default="0.1.0", show_default=True, help="The package version (semver).")
@click.option("--no-bioimageio-test", is_flag=True, help="Skip bioimageio.core's test_model before writing.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines (warnings and errors still show).")
def command(
    run_dir,
    output,
    data_dir,
    weight_formats,
    test_size,
    halo,
    model_version,
    no_bioimageio_test,
    overwrite,
    quiet,
):
    """Package the best weights of the training run RUN_DIR (written by `emzoo train`).

    Exports ONNX, TorchScript and the state dict, checks that they agree with PyTorch, makes test
    tensors with emzoo's runtime, evaluates the package on the use case's test split, writes the
    model card and covers, and runs bioimageio.core's test_model for every weight format. Nothing
    is written unless every check passes. Each step is shown on stderr as it starts, and a warning
    says when the model scores worse than its classical baseline on its main metric.
    """
    from emzoo.packaging.build import BuildOptions
    from emzoo.train.run import package_run

    options = BuildOptions(
        weight_formats=tuple(weight_formats) or FORMATS,
        halo=halo,
        test_size=test_size,
        version=model_version,
        test_with_bioimageio=not no_bioimageio_test,
        overwrite=overwrite,
        progress=None if quiet else _Progress(),
    )
    target = output if output is not None else run_dir / "model.zip"
    written = package_run(
        run_dir,
        target,
        data_dir=data_dir,
        options=options,
        warn=lambda message: click.echo(f"warning: {message}", err=True),
    )
    click.echo(f"wrote {written}")


class _Progress:
    """The packager's steps on stderr, one line each with the seconds since the start; the count of
    predicted images is redrawn in place on a terminal (one line per image otherwise)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.open = False  # a count line waits for its newline

    def __call__(self, stage: str, done: int | None = None) -> None:
        seconds = f"[{time.perf_counter() - self.start:5.0f} s]"
        if done is not None and self.tty:
            click.echo(f"\r{seconds}   {stage}: {done}", nl=False, err=True)
            self.open = True
            return
        if self.open:
            click.echo(err=True)
            self.open = False
        click.echo(f"{seconds} {stage}..." if done is None else f"{seconds}   {stage}: {done}", err=True)
