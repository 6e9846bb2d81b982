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


_FORMAT_ALIASES = {"tif": "tiff", "zarr": "ome-zarr", "ome.zarr": "ome-zarr", "omezarr": "ome-zarr"}


def _output_format(name: str | None) -> str | None:
    if name is None:
        return None
    from emzoo.io.registry import list_writers

    name = _FORMAT_ALIASES.get(name.lower(), name.lower())
    known = sorted(w.name for w in list_writers())
    if name not in known:
        raise UsageError(f"--output-format {name!r}: emzoo writes {', '.join(known)}")
    return name


def _stack_folders(arguments: tuple[str, ...]) -> list[InputFile]:
    """With --stack every INPUT is one folder of slices (one volume, one output)."""
    files = []
    for arg in arguments:
        path = Path(arg)
        if not path.exists():
            raise UsageError(f"{path}: no such folder")
        if not path.is_dir():
            raise UsageError(
                f"{path}: --stack reads folders of 2D slices, this is a file (leave out --stack)"
            )
        files.append(InputFile(path, Path(path.name)))
    return files


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
    "--output-format",
    default=None,
    metavar="FORMAT",
    help="tiff, mrc, ome-zarr, npy or png (default: follows the input: MRC -> mrc, Zarr -> ome-zarr, "
    "else tiff). Outputs keep the input's pixel size.",
)
@click.option("--slices", is_flag=True, help="Run a 2D model on each z slice of a volume (stats per slice).")
@click.option(
    "--stack",
    is_flag=True,
    help="Read each INPUT folder of numbered 2D slices as one volume (z: natural order of the names).",
)
@click.option(
    "--stream/--no-stream",
    default=None,
    help="Predict out of core, chunk by chunk into OME-Zarr (resumable). Default: for Zarr, MRC and "
    "uncompressed TIFF inputs above 64 Mpx and for OME-Zarr outputs.",
)
@click.option(
    "--chunk-size",
    default=None,
    metavar="N[,N...]",
    help="Chunk size in input pixels for out-of-core prediction (default 2048 in-plane, 256 for 3D models).",
)
@click.option(
    "--dask",
    "dask_address",
    default=None,
    metavar="ADDRESS",
    help="Run the chunks on a dask.distributed cluster (scheduler address, e.g. tcp://host:8786).",
)
@click.option(
    "--overlay",
    is_flag=True,
    help="Counting models: also draw the found centres on each image (<name>_overlay.png).",
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
    slices,
    stack,
    stream,
    chunk_size,
    dask_address,
    overlay,
    overwrite,
    quiet,
):
    """Predict every image in INPUTS (files, folders, globs) with the model package MODEL.

    MODEL is a bioimage.io package: a .zip, a folder, or its rdf.yaml. One output file is written per
    input and output tensor; outputs that exist already are skipped, so an interrupted run can simply be
    started again (an interrupted out-of-core run resumes at the first unfinished chunk).
    """
    from tqdm import tqdm

    from emzoo.runtime.batch import Options, predict_samples
    from emzoo.runtime.predictor import Predictor, TileSettings

    output_format = _output_format(output_format)  # unknown formats fail before the model loads
    if batch_size is not None and batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if not inputs and not named:
        raise UsageError("give the images to predict: emzoo predict MODEL IMAGE_OR_FOLDER... [-o OUT]")
    if stream is False and (chunk_size is not None or dask_address is not None):
        option = "--chunk-size" if chunk_size is not None else "--dask"
        raise UsageError(f"{option} is for out-of-core prediction: leave out --no-stream")
    chunk = _sizes(chunk_size, "--chunk-size")
    settings = TileSettings(tile=_sizes(tile, "--tile"), halo=halo, blend=blend, batch_size=batch_size)
    predictor = Predictor(model, weight_format=weight_format, device=device, settings=settings)
    input_ids = [t.id for t in predictor.spec.inputs]
    if slices:
        from emzoo.runtime.slices import check_slices

        check_slices(predictor)
    if named:
        if inputs:
            raise UsageError("give inputs either as arguments or as --input ID=PATH, not both")
        samples = [_named_inputs(named, input_ids)]
    else:
        if len(input_ids) > 1:
            raise UsageError(
                f"the model takes {len(input_ids)} inputs ({', '.join(input_ids)}): "
                f"give each with --input ID=PATH, e.g. --input {input_ids[0]}=a.tif "
                f"--input {input_ids[1]}=b.tif"
            )
        files = _stack_folders(inputs) if stack else expand_inputs(list(inputs))
        samples = [{input_ids[0]: f} for f in files]
    client = None
    if dask_address is not None:
        if len(input_ids) > 1:
            raise UsageError(f"--dask runs one-input models; this one takes {len(input_ids)} inputs")
        from emzoo.runtime.distributed import connect

        client = connect(dask_address)
    options = Options(
        output_format=output_format,
        overwrite=overwrite,
        slices=slices,
        stack=stack,
        stream=stream,
        chunk=chunk,
        client=client,
        overlay=overlay,
    )
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
            bar.set_postfix_str(f"{done}/{total}", refresh=done == total)

    try:
        with bar:
            summary = predict_samples(
                predictor, samples, out, on_file=on_file, on_tile=on_tile, options=options
            )
            bar.update(len(samples) - bar.n)
    finally:
        if client is not None:
            client.close()
    for line in summary.lines():
        click.echo(line, err=bool(summary.failed) and line.startswith("  failed"))
    if summary.written and not quiet:
        click.echo(f"outputs in {out}/", err=True)
    if summary.failed:
        sys.exit(1)
