"""``emzoo predict MODEL INPUT... [-o OUT]``"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from emzoo.errors import UsageError
from emzoo.io import InputFile, expand_inputs


def _sizes(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        sizes = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{option} {text!r}: give whole numbers, e.g. 512 or 512,512") from None
    if not sizes or any(s <= 0 for s in sizes):
        raise UsageError(f"{option} {text!r}: sizes must be positive")
    return sizes


def _named_inputs(pairs: tuple[str, ...], input_ids: list[str]) -> dict[str, InputFile]:
    named: dict[str, InputFile] = {}
    for pair in pairs:
        tid, sep, path = pair.partition("=")
        if not sep or not tid or not path:
            raise UsageError(f"--input {pair!r}: write it as ID=PATH (inputs: {', '.join(input_ids)})")
        if tid not in input_ids:
            raise UsageError(
                f"--input {pair!r}: the model has no input {tid!r} (it has {', '.join(input_ids)})"
            )
        p = Path(path)
        if not p.exists():
            raise UsageError(f"--input {pair!r}: {p}: no such file")
        named[tid] = InputFile(p, Path(p.name))
    missing = [i for i in input_ids if i not in named]
    if missing:
        raise UsageError(f"the model takes {len(input_ids)} inputs: add --input {missing[0]}=PATH")
    return named


@click.command("predict")
@click.argument("model")
@click.argument("inputs", nargs=-1)
@click.option(
    "-o",
    "--output",
    "out_dir",
    default="predictions",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the outputs (keeps the inputs' sub-folders).",
)
@click.option(
    "--input",
    "named",
    multiple=True,
    metavar="ID=PATH",
    help="One per input tensor, for models with several inputs.",
)
@click.option(
    "--weights",
    "weight_format",
    default=None,
    help="Weight format to run (default: onnx, then torchscript, then pytorch_state_dict).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--tile", default=None, metavar="N[,N...]", help="Block size fed to the model (default: automatic)."
)
@click.option(
    "--halo", type=int, default=None, help="Context pixels kept around each tile (default: measured)."
)
@click.option(
    "--blend", type=int, default=None, help="Overlap in pixels blended between tiles (default: automatic)."
)
@click.option(
    "--batch-size", type=int, default=None, help="Tiles per model call (default: 1 on CPU, 4 on GPU)."
)
@click.option(
    "--output-format", default=None, help="tiff (default), or a format emzoo writes (mrc, ome-zarr, npy)."
)
@click.option("--overwrite", is_flag=True, help="Replace outputs that exist (otherwise they are skipped).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def command(
    model,
    inputs,
    out_dir,
    named,
    weight_format,
    device,
    tile,
    halo,
    blend,
    batch_size,
    output_format,
    overwrite,
    quiet,
):
    """Predict every image in INPUTS (files, folders, globs) with the model package MODEL.

    MODEL is a bioimage.io package: a .zip, a folder, or its rdf.yaml. One output file is written per
    input and output tensor; outputs that exist already are skipped, so an interrupted run can simply be
    started again.
    """
    from tqdm import tqdm

    from emzoo.io.registry import get_writer
    from emzoo.runtime.batch import predict_samples
    from emzoo.runtime.predictor import Predictor, TileSettings

    if output_format is not None:
        get_writer(output_format)  # unknown formats fail before the model loads
    if batch_size is not None and batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if not inputs and not named:
        raise UsageError("give the images to predict: emzoo predict MODEL IMAGE_OR_FOLDER... [-o OUT]")
    settings = TileSettings(tile=_sizes(tile, "--tile"), halo=halo, blend=blend, batch_size=batch_size)
    predictor = Predictor(model, weight_format=weight_format, device=device, settings=settings)
    input_ids = [t.id for t in predictor.spec.inputs]
    if named:
        if inputs:
            raise UsageError("give inputs either as arguments or as --input ID=PATH, not both")
        samples = [_named_inputs(named, input_ids)]
    else:
        if len(input_ids) > 1:
            raise UsageError(
                f"the model takes {len(input_ids)} inputs ({', '.join(input_ids)}): "
                f"give each with --input ID=PATH, e.g. --input {input_ids[0]}=a.tif --input {input_ids[1]}=b.tif"
            )
        samples = [{input_ids[0]: f} for f in expand_inputs(list(inputs))]
    out = Path(out_dir)
    desc = f"{predictor.spec.name} [{predictor.weights.format}, {predictor.device}]"
    bar = tqdm(
        total=len(samples), desc=desc, unit="image", disable=quiet, file=sys.stderr, dynamic_ncols=True
    )

    def on_file(item: InputFile) -> None:
        if bar.n or item is not samples[0][input_ids[0]]:
            bar.update(1)
        bar.set_postfix_str(item.path.name, refresh=False)

    def on_tile(done: int, total: int) -> None:
        if total > 1:
            bar.set_postfix_str(f"tile {done}/{total}", refresh=done == total)

    with bar:
        summary = predict_samples(
            predictor,
            samples,
            out,
            output_format=output_format,
            overwrite=overwrite,
            on_file=on_file,
            on_tile=on_tile,
        )
        bar.update(len(samples) - bar.n)
    for line in summary.lines():
        click.echo(line, err=bool(summary.failed) and line.startswith("  failed"))
    if summary.written and not quiet:
        click.echo(f"outputs in {out}/", err=True)
    if summary.failed:
        sys.exit(1)
