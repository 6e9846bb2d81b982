"""``emzoo predict MODEL INPUT... [-o OUT]``"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from emzoo.cli.options import (
    device_option,
    flag_names,
    output_dir_option,
    overwrite_option,
    precision_option,
    quiet_option,
    rescale_options,
    trust_option,
    weights_option,
)
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
    from emzoo.io.lookup import list_writers

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


def _tiling_options(fn):
    for decorator in reversed(
        (
            click.option(
                "--tile",
                default=None,
                metavar="N[,N...]",
                help="Block size fed to the model (default: automatic).",
            ),
            click.option(
                "--halo",
                type=int,
                default=None,
                help="Context pixels kept around each tile (default: measured).",
            ),
            click.option(
                "--blend",
                type=int,
                default=None,
                help="Overlap in pixels blended between tiles (default: automatic).",
            ),
            click.option(
                "--batch-size",
                type=int,
                default=None,
                help="Tiles per model call (default: 1 on CPU; on a GPU as many as its free memory holds, "
                "halved on out-of-memory errors).",
            ),
            click.option(
                "--tta/--no-tta",
                default=None,
                help="Test-time augmentation: average the network's outputs over the flips and 90-degree "
                "turns of every tile (8 where tiles are square and pixels too, else the 4 that keep y "
                "and x), before post-processing and thresholds; 4-8x the inference time. Default: as the "
                "package asks (config.emzoo.tta), else off.",
            ),
        )
    ):
        fn = decorator(fn)
    return fn


def _stream_options(fn):
    for decorator in reversed(
        (
            click.option(
                "--stream/--no-stream",
                default=None,
                help="Predict out of core, chunk by chunk into OME-Zarr (resumable). Default: for Zarr, MRC "
                "and uncompressed TIFF inputs above 64 Mpx and for OME-Zarr outputs.",
            ),
            click.option(
                "--chunk-size",
                default=None,
                metavar="N[,N...]",
                help="Chunk size in input pixels for out-of-core prediction (default 2048 in-plane, 256 for "
                "3D models).",
            ),
            click.option(
                "--dask",
                "dask_address",
                default=None,
                metavar="ADDRESS",
                help="Run the chunks on a dask.distributed cluster (scheduler address, e.g. tcp://host:8786).",
            ),
        )
    ):
        fn = decorator(fn)
    return fn


def _samples(
    predictor, inputs: tuple[str, ...], named: tuple[str, ...], stack: bool, notes: list[str]
) -> list[dict[str, InputFile]]:
    """``{input id: file}`` per sample, from the arguments or from --input ID=PATH (what the search
    of folders skipped goes to ``notes``)."""
    input_ids = [t.id for t in predictor.spec.inputs]
    if named:
        if inputs:
            raise UsageError("give inputs either as arguments or as --input ID=PATH, not both")
        return [_named_inputs(named, input_ids)]
    if len(input_ids) > 1:
        raise UsageError(
            f"the model takes {len(input_ids)} inputs ({', '.join(input_ids)}): "
            f"give each with --input ID=PATH, e.g. --input {input_ids[0]}=a.tif "
            f"--input {input_ids[1]}=b.tif"
        )
    files = _stack_folders(inputs) if stack else expand_inputs(list(inputs), notes)
    return [{input_ids[0]: f} for f in files]


def _progress(predictor, samples: list[dict[str, InputFile]], quiet: bool):
    """The progress bar and its two callbacks (next file, tiles done)."""
    from tqdm import tqdm

    first = samples[0][predictor.spec.inputs[0].id] if samples else None
    precision = "" if predictor.precision.precision == "fp32" else f", {predictor.precision.precision}"
    tta = ", tta" if predictor.tta else ""
    desc = f"{predictor.spec.name} [{predictor.weights.format}, {predictor.device}{precision}{tta}]"
    bar = tqdm(
        total=len(samples), desc=desc, unit="image", disable=quiet, file=sys.stderr, dynamic_ncols=True
    )

    def on_file(item: InputFile) -> None:
        if bar.n or item is not first:
            bar.update(1)
        bar.set_postfix_str(item.path.name, refresh=False)

    def on_tile(done: int, total: int) -> None:
        if total > 1:
            bar.set_postfix_str(f"{done}/{total}", refresh=done == total)

    return bar, on_file, on_tile


@click.command("predict")
@click.argument("model")
@click.argument("inputs", nargs=-1)
@output_dir_option("predictions", "Folder for the outputs (keeps the inputs' sub-folders).")
@click.option(
    "--input",
    "named",
    multiple=True,
    metavar="ID=PATH",
    help="One per input tensor, for models with several inputs.",
)
@weights_option()
@trust_option
@device_option
@precision_option
@click.option(
    "--calibrate",
    multiple=True,
    metavar="IMAGES",
    help="With --precision int8: calibrate on these images (files or folders; the first 16 blocks) "
    "instead of the package's test input (repeatable).",
)
@_tiling_options
@click.option(
    "--output-format",
    default=None,
    metavar="FORMAT",
    help="tiff, mrc, ome-zarr, npy or png (default: follows the input: MRC -> mrc, Zarr -> ome-zarr, "
    "else tiff). Outputs keep the input's pixel size. png: uint8/uint16 outputs (labels) as they are; float "
    "outputs converted to 8-bit pictures as by --preview, full size (a volume: its middle slice only).",
)
@click.option(
    "--output-dtype",
    "dtype",
    type=click.Choice(["model", "input"]),
    default="model",
    show_default=True,
    help="model: each output as its package declares it (a denoiser's grey levels in float32); input: "
    "float image outputs in the input image's dtype, rounded and clipped to its range for integers (uint8: "
    "0..255), e.g. a denoised image as the uint16 it came in. Predicted in memory (not with --stream).",
)
@click.option(
    "--keep-axes",
    is_flag=True,
    help="Write each output with every axis its package declares but batch, in its order (default: "
    "a channel axis of length 1 is dropped too: a (1,1,1,512,512) output is written as 1x512x512).",
)
@click.option("--slices", is_flag=True, help="Run a 2D model on each z slice of a volume (stats per slice).")
@rescale_options
@click.option(
    "--ood",
    type=click.Choice(["warn", "skip", "fail"], case_sensitive=False),
    default="warn",
    show_default=True,
    help="An input unlike the model's training data (out of distribution: its score above the "
    "package's calibrated threshold, or a pixel size far from the training data's; see "
    "docs/trust.md): warn in the summary, skip it (no output written, the summary says so), or fail "
    "(stop the run, exit 1). Every input's verdict goes to its provenance record.",
)
@click.option(
    "--stack",
    is_flag=True,
    help="Read each INPUT folder of numbered 2D slices as one volume (z: natural order of the names).",
)
@_stream_options
@click.option(
    "--overlay",
    is_flag=True,
    help="Counting models: also draw the found centres on each image (<name>_overlay.png).",
)
@click.option(
    "--preview",
    is_flag=True,
    help="Also write an 8-bit <output>.preview.png beside each float output, for any viewer: "
    "probabilities (within 0..1, or after a sigmoid/softmax) linear 0..255, other images stretched "
    "between their 0.5 and 99.5 percentiles; a volume's middle slice; channels side by side in one "
    "grid (channel 0 top left); larger than 8192 px: every n-th pixel. Skipped and replaced like the "
    "outputs; outputs that exist already get their preview without predicting again.",
)
@overwrite_option()
@quiet_option
def command(model, inputs, out_dir, named, weight_format, device, quiet, **options):
    """Predict every image in INPUTS (files, folders, globs) with the model package MODEL.

    MODEL is a bioimage.io package: a .zip, a folder, or its rdf.yaml. One output file is written per
    input and output tensor; outputs that exist already are skipped, so an interrupted run can simply be
    started again (an interrupted out-of-core run resumes at the first unfinished chunk). Outputs are
    written without their batch axis and, unless --keep-axes, without a channel axis of length 1.
    """
    from emzoo.drivers.files import predict_samples
    from emzoo.drivers.guards import check_run
    from emzoo.drivers.options import InputOptions, OutputOptions, RunOptions, StreamOptions
    from emzoo.drivers.outputs import check_output_options
    from emzoo.runtime.predictor import Predictor
    from emzoo.runtime.rescale import model_notes
    from emzoo.runtime.settings import DeviceSpec, TileSettings

    # every option value is checked before the model loads or any file is read
    output = OutputOptions(
        _output_format(options["output_format"]),
        options["overwrite"],
        options["overlay"],
        keep_axes=options["keep_axes"],
        preview=options["preview"],
        dtype=None if options["dtype"] == "model" else options["dtype"],
    )
    if not inputs and not named:
        raise UsageError("give the images to predict: emzoo predict MODEL IMAGE_OR_FOLDER... [-o OUT]")
    stream = StreamOptions(
        options["stream"], _sizes(options["chunk_size"], "--chunk-size"), options["dask_address"]
    )
    settings = TileSettings(
        _sizes(options["tile"], "--tile"),
        options["halo"],
        options["blend"],
        options["batch_size"],
        tta=options["tta"],
    )
    inputs_options = InputOptions(
        options["slices"], options["stack"], options["rescale"], options["pixel_size"], options["ood"].lower()
    )
    run_options = RunOptions(output, inputs_options, stream)
    predictor = Predictor(
        model,
        weight_format=weight_format,
        trust_package_code=options["trust_package_code"],
        device=DeviceSpec.parse(device, precision=options["precision"], calibrate=options["calibrate"]),
        settings=settings,
    )
    # the options that depend on the model: checked once it is loaded, before any file is read
    check_run(predictor.spec, predictor.settings, run_options)
    check_output_options(predictor.spec, run_options.output)
    if run_options.inputs.slices:
        from emzoo.drivers.slices import check_slices

        check_slices(predictor)
    notes: list[str] = [] if predictor.precision.precision == "fp32" else [predictor.precision.note()]
    notes += model_notes(predictor.spec, inputs_options.rescale, inputs_options.pixel_size)
    if predictor.tta:
        notes.append("test-time augmentation: outputs averaged over the tiles' flips and 90-degree turns")
    samples = _samples(predictor, inputs, named, run_options.inputs.stack, notes)
    client = _connect(predictor, stream.client)
    if client is not None:
        run_options = RunOptions(
            output, run_options.inputs, StreamOptions(stream.enabled, stream.chunk, client)
        )
    out = Path(out_dir)
    bar, on_file, on_tile = _progress(predictor, samples, quiet)
    try:
        with bar:
            summary = predict_samples(
                predictor, samples, out, on_file=on_file, on_tile=on_tile, options=run_options
            )
            bar.update(len(samples) - bar.n)
    finally:
        if client is not None:
            client.close()
    summary.notes[:0] = notes
    names = flag_names(click.get_current_context().command)
    for line in summary.lines(names):
        click.echo(line, err=bool(summary.failed) and line.startswith("  failed"))
    if summary.written and not quiet:
        click.echo(f"outputs in {out}/", err=True)
    if summary.failed:
        sys.exit(1)


def _connect(predictor, address: str | None):
    """The dask client for --dask ADDRESS (None without it)."""
    if address is None:
        return None
    if len(predictor.spec.inputs) > 1:
        raise UsageError(f"--dask runs one-input models; this one takes {len(predictor.spec.inputs)} inputs")
    from emzoo.drivers.distributed import connect

    return connect(address)
