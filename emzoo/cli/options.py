"""The options several commands share, declared once, and the one place that maps the library's
parameter names to flags (errors below ``emzoo.cli`` name parameters: :mod:`emzoo.errors`)."""

from __future__ import annotations

from collections.abc import Callable

import click

# parameter templates of library messages -> what the CLI shows; anything else is looked up among the
# running command's options by parameter name (``tile`` -> ``--tile``)
FLAGS = {
    "chunk": "--chunk-size",
    "client": "--dask",
    "output": "--target",  # the output an explanation is of (emzoo explain)
    "format": "--output-format",
    "weight_format": "--weights",
    "stream=False": "--no-stream",
    "stream=True": "--stream",
    "overwrite=True": "--overwrite",
    "slices=True": "--slices",
    "slices=False": "--slices",
    "stack=True": "--stack",
    "stack=False": "--stack",
    "device=cuda": "--device cuda",
}


def flag_names(command: click.Command | None) -> Callable[[str, str | None], str | None]:
    """``(name, value) -> flag text`` for the parameters of ``command`` (see :func:`emzoo.errors.render`)."""
    options = {}
    if command is not None:
        for p in command.params:
            if isinstance(p, click.Option) and p.name:
                options[p.name] = max(p.opts, key=len)

    def show(name: str, value: str | None) -> str | None:
        whole = f"{name}={value}" if value is not None else name
        if whole in FLAGS:
            return FLAGS[whole]
        flag = FLAGS.get(name) or options.get(name)
        if flag is None:
            return None
        return flag if value is None or value in ("True", "False") else f"{flag} {value}"

    return show


def device_option(fn):
    return click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto (CUDA when there is one), cpu, cuda or cuda:N.",
    )(fn)


def precision_option(fn):
    return click.option(
        "--precision",
        default="fp32",
        show_default=True,
        metavar="fp32|int8|bf16|fp16",
        help="Numeric precision of the network. int8: ONNX weights on CPU, statically quantized once per "
        "model (cached) and calibrated on the package's test input; its deviation from fp32 is reported. "
        "bf16/fp16: torch weights on CUDA (autocast), deviation reported; refused on CPU with the reason.",
    )(fn)


def weights_option(
    help: str = "Weight format to run (default: onnx, then torchscript, then pytorch_state_dict).",
):
    return click.option("--weights", "weight_format", default=None, help=help)


def trust_option(fn):
    return click.option(
        "--trust-package-code",
        is_flag=True,
        help="Run the package's own Python code, which pytorch_state_dict weights need (their "
        "architecture file): only for packages you trust. Also: EMZOO_TRUST_PACKAGE_CODE=1.",
    )(fn)


def output_dir_option(default: str, help: str):
    return click.option(
        "-o",
        "--output",
        "out_dir",
        default=default,
        show_default=True,
        type=click.Path(file_okay=False),
        help=help,
    )


def overwrite_option(help: str = "Replace outputs that exist (otherwise they are skipped)."):
    return click.option("--overwrite", is_flag=True, help=help)


def quiet_option(fn):
    return click.option("-q", "--quiet", is_flag=True, help="No progress bar.")(fn)


def rescale_options(fn):
    """``--rescale auto|off`` and ``--pixel-size SIZE`` (:mod:`emzoo.runtime.rescale`)."""
    fn = click.option(
        "--pixel-size",
        default=None,
        metavar="SIZE",
        help="The inputs' pixel size, e.g. 2.5nm, 4Å or 0.004um (a bare number: the model's unit); Y,X or "
        "Z,Y,X for each axis. Replaces the files' own calibration (a note in the summary says so) and "
        "travels to the outputs.",
    )(fn)
    return click.option(
        "--rescale",
        type=click.Choice(["auto", "off"], case_sensitive=False),
        default="off",
        show_default=True,
        help="auto: an input whose pixel size (from its file or --pixel-size) differs by more than 10 % "
        "from the model's training data (config.emzoo.training_data) is resampled to it (cubic, "
        "anti-aliased when it shrinks), predicted, and its outputs resampled back to the input's grid: "
        "probabilities and images linear, labels nearest, density maps keeping their integral, "
        "centres and diameters scaled. In memory only (not with --stream or --dask).",
    )(fn)
