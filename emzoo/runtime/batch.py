"""Predict many files with one loaded model: output names, skipping, atomic writes, a summary.

Each input is predicted in memory, slice by slice (``slices``: a 2D model on a volume), or, for large
lazy inputs (Zarr, MRC, uncompressed TIFF above :data:`STREAM_ABOVE_PIXELS`) and OME-Zarr outputs,
out of core, chunk by chunk (:mod:`emzoo.runtime.streaming`), optionally on a dask cluster
(``client``, :mod:`emzoo.runtime.distributed`). Outputs keep the input's calibration.
"""

from __future__ import annotations

import csv
import io as _io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emzoo.atomic import write_text_atomic
from emzoo.errors import EmzooError, UsageError
from emzoo.io import Image, InputFile, read_image, read_slice_folder, write_image
from emzoo.io.registry import get_writer
from emzoo.runtime import counting, processing
from emzoo.runtime.ood import check_input
from emzoo.runtime.predictor import Predictor
from emzoo.runtime.slices import predict_slices, takes_slices

log = logging.getLogger(__name__)

# the default output format follows the input where emzoo can write that format
_FOLLOW_INPUT = {"mrc": "mrc", "ome-zarr": "ome-zarr", "zarr": "ome-zarr"}
_KNOWN_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr")
# lazy inputs with more pixels than this are predicted out of core (chunk by chunk) by default
STREAM_ABOVE_PIXELS = 2**26
COUNTS_TABLE = "counts.csv"
CENTRES = "centres"  # the key of a counting model's per-image points in the output paths


@dataclass(frozen=True)
class Options:
    """How the inputs of one run are read and predicted (the CLI's options, one record)."""

    output_format: str | None = None  # None: follows the input (output_format_for)
    overwrite: bool = False
    slices: bool = False  # a 2D model on each z slice of a volume
    stack: bool = False  # each input is a folder of 2D slices, read as one volume
    stream: bool | None = None  # out of core: None = for large lazy inputs and OME-Zarr outputs
    chunk: tuple[int, ...] | None = None  # streaming chunk size (input px per tiled axis)
    client: object = None  # a dask.distributed Client or scheduler address: chunks run there
    overlay: bool = False  # counting models: draw the centres on the image


@dataclass
class Summary:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: list[dict] = field(default_factory=list)  # counting models: one row per image
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [
            f"done: {len(self.done)}, skipped: {len(self.skipped)}, failed: {len(self.failed)}"
            f" ({self.seconds:.1f} s)"
        ]
        out += [f"  failed {p}: {reason}" for p, reason in self.failed]
        out += [f"  {note}" for note in self.notes]
        if self.skipped:
            out.append("  skipped inputs whose outputs exist already (--overwrite replaces them)")
        return out


def stem(path: Path) -> str:
    name = path.name
    for suffix in _KNOWN_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def output_format_for(image_format: str, requested: str | None) -> str:
    return requested or _FOLLOW_INPUT.get(image_format, "tiff")


def output_stems(items: Sequence[InputFile]) -> dict[Path, str]:
    """``<relative folder>/<stem>`` per input; inputs that would share one (a.png, a.tif) keep their
    suffix in it (``a_png``, ``a_tif``)."""
    plain = {f.path: str(f.relative.parent / stem(f.path)) for f in items}
    counts: dict[str, int] = {}
    for name in plain.values():
        counts[name] = counts.get(name, 0) + 1
    return {
        f.path: plain[f.path]
        if counts[plain[f.path]] == 1
        else plain[f.path] + "_" + f.path.suffix.lstrip(".")
        for f in items
    }


def output_paths(predictor: Predictor, base: str, out_dir: Path, fmt: str) -> dict[str, Path]:
    """One path per output tensor: ``OUT/<relative folder>/<stem>_<output id><suffix>``."""
    paths = {}
    for t in predictor.spec.outputs:
        is_value = not any(a.is_spatial for a in t.axes)
        suffix = ".csv" if is_value else get_writer(fmt).suffix
        paths[t.id] = out_dir / f"{base}_{t.id}{suffix}"
    return paths


def _write_csv(path: Path, image: Image, channel_names: Sequence[str]) -> None:
    values = np.asarray(image.data).reshape(-1)
    names = (
        list(channel_names) if len(channel_names) == values.size else [f"v{i}" for i in range(values.size)]
    )
    buf = _io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(names)
    writer.writerow([f"{v:.6g}" for v in values])
    write_text_atomic(path, buf.getvalue())


def _writable(data: np.ndarray) -> np.ndarray:
    if data.dtype == np.bool_:
        return data.astype(np.uint8)
    if data.dtype == np.float64:
        return data.astype(np.float32)
    return data


def _guarded(summary: Summary, path: Path, fn: Callable[[], None]) -> None:
    """Run one input's prediction; a failure is recorded in the summary, not raised."""
    try:
        fn()
    except EmzooError as e:
        summary.failed.append((path, str(e)))
    except MemoryError:
        summary.failed.append((path, "out of memory: try a smaller --tile"))
    except Exception as e:  # keep going with the other inputs; --verbose logs the traceback
        log.info("unexpected error on %s", path, exc_info=True)
        summary.failed.append((path, f"{type(e).__name__}: {e}"))


def predict_samples(
    predictor: Predictor,
    samples: Sequence[dict[str, InputFile]],
    out_dir: Path,
    *,
    options: Options | None = None,
    on_file: Callable[[InputFile], None] | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> Summary:
    """Predict samples given as ``{input id: file}`` (one file per model input); outputs are named
    after the first input. One failure does not stop the others. ``options``: output format,
    overwriting, slices, stacks, streaming, a dask client."""
    options = options or Options()
    summary = Summary()
    start = time.perf_counter()
    first_id = predictor.spec.inputs[0].id
    stems = output_stems([s[first_id] for s in samples])
    for sample in samples:
        item = sample[first_id]
        if on_file is not None:
            on_file(item)
        _guarded(
            summary,
            item.path,
            lambda s=sample, i=item: _predict_one(
                predictor, s, i, stems[i.path], out_dir, options, on_tile, summary
            ),
        )
    if summary.counts:
        table = _merge_counts(out_dir / COUNTS_TABLE, summary.counts)
        summary.written.append(counting.write_counts_csv(out_dir / COUNTS_TABLE, table))
        summary.notes.append(f"counts of {len(table)} images in {out_dir / COUNTS_TABLE}")
    summary.seconds = time.perf_counter() - start
    return summary


def _merge_counts(path: Path, rows: list[dict]) -> list[dict]:
    """This run's rows over those of an earlier run into the same folder (skipped images keep theirs)."""
    by_file: dict[str, dict] = {}
    if path.is_file():
        with open(path, newline="") as f:
            by_file = {row["file"]: row for row in csv.DictReader(f)}
    by_file.update({str(row["file"]): row for row in rows})
    return [by_file[k] for k in sorted(by_file)]


def _channel_names(tensor) -> tuple[str, ...]:
    return next((a.channel_names for a in tensor.axes if a.type == "channel"), ())


def read_input(path: Path, *, stack: bool = False) -> Image:
    """One input image (lazy where its format allows); ``stack``: a folder of 2D slices as a volume."""
    return read_slice_folder(path) if stack else read_image(path)


def should_stream(predictor: Predictor, images: dict[str, Image], fmt: str, options: Options) -> bool:
    """Out of core: when asked, with a dask client, or (by default) for single-input models with an
    OME-Zarr output or a lazy input above :data:`STREAM_ABOVE_PIXELS`."""
    if options.client is not None:
        return True
    if options.stream is not None:
        return options.stream
    if len(predictor.spec.inputs) != 1:
        return False
    image = next(iter(images.values()))
    large = not processing.in_memory(image.data) and np.prod(image.shape) > STREAM_ABOVE_PIXELS
    return fmt == "ome-zarr" or bool(large)


def _predict_one(
    predictor: Predictor,
    inputs: dict[str, InputFile],
    name_from: InputFile,
    base: str,
    out_dir: Path,
    options: Options,
    on_tile: Callable[[int, int], None] | None,
    summary: Summary,
) -> None:
    images = {tid: read_input(item.path, stack=options.stack) for tid, item in inputs.items()}
    first = images[predictor.spec.inputs[0].id]
    fmt = output_format_for(first.meta.format, options.output_format)
    paths = output_paths(predictor, base, out_dir, fmt)
    count_config = counting.counting_config(predictor.spec)
    if count_config is not None:
        paths[CENTRES] = out_dir / f"{base}_centres.csv"
    todo = {tid: p for tid, p in paths.items() if options.overwrite or not p.exists()}
    if not todo:
        summary.skipped.append(name_from.path)
        return
    summary.notes.extend(f"warning: {name_from.path}: {w}" for w in check_input(predictor.spec.emzoo, first))
    # counting needs the whole map in memory (maxima across chunk borders): such models never stream
    streamed = (
        count_config is None
        and should_stream(predictor, images, fmt, options)
        and _stream_one(predictor, first, name_from, paths, fmt, options, on_tile, summary)
    )
    if streamed:
        summary.written.extend(paths.values())
        summary.done.append(name_from.path)
        return
    if options.slices and takes_slices(images):
        results = predict_slices(predictor, images, progress=on_tile)
    else:
        results = predictor.predict(images, progress=on_tile)
    if count_config is not None:
        result = counting.count_outputs(results, count_config)
        summary.counts.append(counting.summary_row(name_from.relative, result))
        if CENTRES in todo:
            summary.written.append(counting.write_centres_csv(todo.pop(CENTRES), result))
        if options.overlay and result.axes == "yx":
            overlay = out_dir / f"{base}_overlay.png"
            summary.written.append(
                counting.render_overlay(np.asarray(first.data), result, overlay, axes=first.meta.axes)
            )
    for tid, path in todo.items():
        image = results[tid]
        if path.suffix == ".csv":
            _write_csv(path, image, _channel_names(predictor.spec.output(tid)))
        else:
            write_image(path, _writable(np.asarray(image.data)), image.meta, format=fmt)
        summary.written.append(path)
    summary.done.append(name_from.path)


def _stream_one(
    predictor: Predictor,
    image: Image,
    item: InputFile,
    paths: dict[str, Path],
    fmt: str,
    options: Options,
    on_tile: Callable[[int, int], None] | None,
    summary: Summary,
) -> bool:
    """Predict out of core; False when the model cannot stream and streaming was only the default."""
    from emzoo.runtime import streaming

    kwargs = dict(
        output_format=fmt,
        slices=options.slices,
        chunk=options.chunk,
        overwrite=options.overwrite,
        progress=on_tile,
    )
    try:
        if options.client is not None:
            from emzoo.runtime.distributed import InputRef, run_distributed

            source = InputRef(str(item.path.resolve()), options.stack)
            result = run_distributed(predictor, image, source, paths, options.client, **kwargs)
        else:
            result = streaming.predict_streaming(predictor, image, paths, **kwargs)
    except UsageError as e:
        if options.stream is not None or options.client is not None:
            raise
        log.warning("%s: predicted in memory: %s", item.path, e)
        return False
    summary.notes.extend(f"{item.path}: {note}" for note in result.notes)
    return True
