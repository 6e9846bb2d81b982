"""Predict many files with one loaded model: output names, skipping, atomic writes, a summary.

Each input is predicted in memory, slice by slice (``slices``: a 2D model on a volume), or, for large
lazy inputs (Zarr, MRC, uncompressed TIFF above :data:`STREAM_ABOVE_PIXELS`) and OME-Zarr outputs,
out of core, chunk by chunk (:mod:`emzoo.drivers.streaming`), optionally on a dask cluster
(:mod:`emzoo.drivers.distributed`). Outputs keep the input's calibration; what a package's outputs
mean beyond tensors (counts, centres) is its output kind's business (:mod:`emzoo.drivers.kinds`).

Before any file is read the run's options are checked against the model; every input is guarded
(:mod:`emzoo.drivers.guards`): emzoo's own outputs found among the inputs are left out, no output
replaces an input or leaves the output folder, non-finite images and in-memory predictions beyond
the memory available are refused, and a full disk is one line (``no space left on OUT``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from emzoo.atomic import LockedError, OutputLock, is_disk_full, lock_path, no_space
from emzoo.drivers import guards, provenance
from emzoo.drivers.kinds import OutputKind, Sample, output_kind
from emzoo.drivers.options import RunOptions
from emzoo.drivers.outputs import (
    PREVIEW_SUFFIX,
    check_output_options,
    is_value_table,
    output_format_for,
    output_paths,
    output_stems,
    preview_paths,
    write_output,
    write_previews,
)
from emzoo.drivers.slices import predict_slices, takes_slices
from emzoo.errors import EmzooError, Names, UsageError, literal, render
from emzoo.io import Image, InputFile, read_image, read_slice_folder
from emzoo.io.write import cast_to
from emzoo.runtime import processing
from emzoo.runtime.predictor import Predictor
from emzoo.runtime.rescale import Rescale, sample_grid
from emzoo.tasks.ood import Check, OutOfDistribution, policy_note

log = logging.getLogger(__name__)

# lazy inputs with more pixels than this are predicted out of core (chunk by chunk) by default
STREAM_ABOVE_PIXELS = 2**26


@dataclass
class Summary:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # the output kind's row per sample (e.g. counts)
    rescaled: dict[Path, Rescale] = field(default_factory=dict)  # inputs resampled (rescale="auto")
    ood: dict[Path, dict] = field(default_factory=dict)  # each input's out-of-distribution verdict
    seconds: float = 0.0

    def lines(self, names: Names | None = None) -> list[str]:
        """The summary as text; parameters named as ``names`` shows them (:func:`emzoo.errors.render`)."""
        out = [
            f"done: {len(self.done)}, skipped: {len(self.skipped)}, failed: {len(self.failed)}"
            f" ({self.seconds:.1f} s)"
        ]
        out += [f"  failed {literal(p)}: {reason}" for p, reason in self.failed]
        out += [f"  {note}" for note in self.notes]
        if self.skipped:
            out.append("  skipped inputs whose outputs exist already ({overwrite=True} replaces them)")
        return [render(line, names) for line in out]


def _guarded(summary: Summary, path: Path, out_dir: Path, fn: Callable[[], None]) -> None:
    """Run one input's prediction; a failure is recorded in the summary, not raised."""
    try:
        fn()
    except OutOfDistribution:  # ood="fail": the run stops
        raise
    except EmzooError as e:
        summary.failed.append((path, _without_path(path, e.template)))
    except MemoryError:
        summary.failed.append((path, "out of memory: try a smaller {tile}"))
    except OSError as e:
        if not is_disk_full(e):
            log.info("unexpected error on %s", path, exc_info=True)
            summary.failed.append((path, f"{type(e).__name__}: {e}"))
        else:  # a full disk outside the atomic writes (the chunks of an out-of-core run)
            summary.failed.append((path, no_space(out_dir).template))
    except Exception as e:  # keep going with the other inputs; verbose logging has the traceback
        log.info("unexpected error on %s", path, exc_info=True)
        summary.failed.append((path, f"{type(e).__name__}: {e}"))


def _without_path(path: Path, reason: str) -> str:
    """A failure's reason without the input's path in front: the summary line names it already."""
    for shown in (literal(path), str(path)):
        if reason.startswith(shown + ": "):
            return reason[len(shown) + 2 :]
    return reason


@dataclass(frozen=True)
class _Run:
    """What every sample of one run shares."""

    predictor: Predictor
    kind: OutputKind
    out_dir: Path
    options: RunOptions
    on_tile: Callable[[int, int], None] | None
    inputs: frozenset[Path] = frozenset()  # every input of the run, resolved: never overwritten
    overlap: _Overlap | None = None  # reads ahead and writes behind in threads (RunOptions.overlap)


class _Overlap:
    """Reads the next sample's inputs and writes the last sample's outputs while the model runs: one
    read ahead and one write behind (bounded memory). A failed read or write is the failure of its
    input, as without overlap; :meth:`close` lets the write under way finish (it is atomic), also on
    Ctrl-C, so nothing half-written is left and no prediction that is done is lost."""

    def __init__(self, summary: Summary, out_dir: Path, stack: bool):
        from concurrent.futures import ThreadPoolExecutor

        self.summary, self.out_dir, self.stack = summary, out_dir, stack
        self.reader = ThreadPoolExecutor(1, thread_name_prefix="emzoo-read")
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="emzoo-write")
        self.reads: dict[tuple[Path, ...], Future] = {}
        self.pending: Future | None = None

    def prefetch(self, inputs: dict[str, InputFile]) -> None:
        key = tuple(item.path for item in inputs.values())
        self.reads[key] = self.reader.submit(_read_all, inputs, self.stack)

    def images(self, inputs: dict[str, InputFile]) -> dict[str, Image]:
        """The inputs read ahead (their read's error raised here), else read now."""
        future = self.reads.pop(tuple(item.path for item in inputs.values()), None)
        return _read_all(inputs, self.stack) if future is None else future.result()

    def write(self, path: Path, fn: Callable[[], None]) -> None:
        """Run ``fn`` (the writes of ``path``'s outputs) in the writer, after the write before it."""
        self.wait()
        self.pending = self.writer.submit(_guarded, self.summary, path, self.out_dir, fn)

    def wait(self) -> None:
        if self.pending is not None:
            self.pending.result()
            self.pending = None

    def close(self) -> None:
        for future in self.reads.values():
            future.cancel()
        self.reader.shutdown(wait=True, cancel_futures=True)
        self.writer.shutdown(wait=True)
        self.pending = None


def _read_all(inputs: dict[str, InputFile], stack: bool) -> dict[str, Image]:
    return {tid: read_input(item.path, stack=stack) for tid, item in inputs.items()}


def predict_samples(
    predictor: Predictor,
    samples: Sequence[dict[str, InputFile]],
    out_dir: Path,
    *,
    options: RunOptions | None = None,
    on_file: Callable[[InputFile], None] | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> Summary:
    """Predict samples given as ``{input id: file}`` (one file per model input); outputs are named
    after the first input. One failure does not stop the others.

    Failure reasons and notes in the summary name parameters as ``{name}`` templates
    (:class:`emzoo.errors.EmzooError`): ``Summary.lines`` gives them as they are; the CLI shows flags.
    Options that do not fit the model raise :class:`UsageError` before any file is read.
    """
    options = options or RunOptions()
    guards.check_run(predictor.spec, predictor.settings, options)
    check_output_options(predictor.spec, options.output)
    out_dir = Path(out_dir)
    summary = Summary()
    samples, left_out = guards.own_outputs(samples, out_dir)
    if left_out:
        shown = ", ".join(literal(p) for p in left_out[:3]) + (", ..." if len(left_out) > 3 else "")
        summary.notes.append(
            f"left out {len(left_out)} input(s) in {literal(out_dir)} that emzoo wrote (outputs of an "
            f"earlier run, not predicted again): {shown}"
        )
    inputs = frozenset(guards.input_set(samples))
    overlap = (
        _Overlap(summary, out_dir, options.inputs.stack) if options.overlap and len(samples) > 1 else None
    )
    run = _Run(predictor, output_kind(predictor.spec), out_dir, options, on_tile, inputs, overlap)
    start = time.perf_counter()
    first_id = predictor.spec.inputs[0].id
    stems = output_stems([s[first_id] for s in samples])
    try:
        for n, sample in enumerate(samples):
            item = sample[first_id]
            if overlap is not None and n + 1 < len(samples):
                overlap.prefetch(samples[n + 1])  # read while this sample is predicted
            if on_file is not None:
                on_file(item)
            _guarded(
                summary,
                item.path,
                out_dir,
                lambda s=sample, i=item: _predict_one(run, s, i, stems[i.path], summary),
            )
    finally:
        if overlap is not None:  # the last writes finish (each atomic), also on Ctrl-C
            overlap.close()
    finished = run.kind.finish_run(run.out_dir, summary.rows)
    summary.written += finished.written
    summary.notes += finished.notes
    previews = sum(p.name.endswith(PREVIEW_SUFFIX) for p in summary.written)
    if previews:
        summary.notes.append(f"previews: {previews} (<output>{PREVIEW_SUFFIX}, 8-bit, beside the outputs)")
    summary.seconds = time.perf_counter() - start
    return summary


def read_input(path: Path, *, stack: bool = False) -> Image:
    """One input image (lazy where its format allows); ``stack``: a folder of 2D slices as a volume."""
    return read_slice_folder(path) if stack else read_image(path)


def should_stream(predictor: Predictor, images: dict[str, Image], fmt: str, options: RunOptions) -> bool:
    """Out of core: when asked, with a dask client, or (by default) for single-input models with an
    OME-Zarr output or a lazy input above :data:`STREAM_ABOVE_PIXELS`."""
    stream = options.stream
    if stream.client is not None:
        return True
    if stream.enabled is not None:
        return stream.enabled
    if options.output.dtype is not None:  # the outputs are cast in memory (RunOptions refuses stream=True)
        return False
    if len(predictor.spec.inputs) != 1:
        return False
    image = next(iter(images.values()))
    large = not processing.in_memory(image.data) and np.prod(image.shape) > STREAM_ABOVE_PIXELS
    return fmt == "ome-zarr" or bool(large)


def _predict_one(
    run: _Run, inputs: dict[str, InputFile], name_from: InputFile, base_name: str, summary: Summary
) -> None:
    predictor, options = run.predictor, run.options
    started = provenance.now()
    images = _read_all(inputs, options.inputs.stack) if run.overlap is None else run.overlap.images(inputs)
    first = images[predictor.spec.inputs[0].id]
    fmt = output_format_for(first.meta.format, options.output.format)
    base = run.out_dir / base_name
    paths = output_paths(predictor.spec, base, fmt)
    extra = run.kind.extra_paths(base)
    previews = preview_paths(predictor.spec, paths) if options.output.preview else {}
    wanted = {**paths, **extra, **previews}
    main = paths[predictor.spec.outputs[0].id]
    record_path = provenance.record_path(main)  # one per input, listing all its files
    guards.check_outputs([*wanted.values(), record_path], run.inputs, run.out_dir)
    # outputs without their record are incomplete (a run ended between them): all are written again
    todo = provenance.todo(wanted, record_path, main, overwrite=options.output.overwrite, derived=previews)
    if not todo:
        _drop_stale_locks(wanted.values())
        summary.skipped.append(name_from.path)
        return
    if set(todo) <= set(previews):  # every output exists: their previews are drawn from them
        summary.written += write_previews(predictor.spec, todo, None, paths)
        provenance.add_files(record_path, todo.values())
        summary.done.append(name_from.path)
        return
    stream = run.kind.streams and should_stream(predictor, images, fmt, options)
    # the pixel size given by hand, and with rescale="auto" the inputs on the model's pixel size
    grid = sample_grid(
        predictor.spec, images, options.inputs.rescale, options.inputs.pixel_size, streamed=stream
    )
    summary.notes.extend(f"{literal(name_from.path)}: {note}" for note in grid.notes)
    if grid.rescale is not None:
        summary.rescaled[name_from.path] = grid.rescale
    images, first = grid.model_images, grid.model_images[predictor.spec.inputs[0].id]
    if not stream:  # streamed chunks are checked as they are read (emzoo.drivers.streaming)
        _check_in_memory(run, inputs, images, name_from)
    # image features once, the network's (where the package has them) read during the prediction
    # of the whole image, or of its crop on their own for streamed and slice-by-slice runs
    slices = options.inputs.slices and takes_slices(images)
    reader = None if stream or slices else predictor
    check = Check(predictor.spec.emzoo, first, predictor.spec, predictor.package, predictor=reader)
    verdict = check.verdict()  # before the run; after it, with the outputs' features too
    sources = {tid: item.path for tid, item in inputs.items()}
    record = provenance.begin(
        predictor, grid.images, sources, options=options, ood=verdict.record(), started=started
    )
    if grid.rescale is not None:
        record["runtime"]["rescaled"] = grid.rescale.as_dict()
    if stream and not _ood_allows(run, name_from, verdict, summary, record):
        return
    if stream and _stream_one(run, first, name_from, paths, fmt, summary, record):
        summary.written += [*paths.values(), record_path]
        drawn = write_previews(predictor.spec, todo, None, paths)
        provenance.add_files(record_path, drawn)
        summary.written += drawn
        summary.done.append(name_from.path)
        return
    if stream:  # the model cannot stream: predicted in memory after all
        _check_in_memory(run, inputs, images, name_from)
    if slices:
        per_slice: list[dict] = []
        progress = _keeping_statistics(run, per_slice)
        results = predict_slices(predictor, images, progress=progress, keep_axes=options.output.keep_axes)
        provenance.note_run(record, predictor, per_slice)
    else:
        results = predictor.predict(images, progress=run.on_tile, keep_axes=options.output.keep_axes)
        statistics = provenance.statistics_section(predictor.spec, predictor.last_statistics)
        provenance.note_run(record, predictor, statistics)
    if not _ood_allows(run, name_from, check.verdict(results), summary, record):
        return
    provenance.retract(record_path)  # before the kind's files and the outputs replace earlier ones
    # the kind sees the input as read and the outputs on the model's grid (their calibration says which)
    original = grid.images[predictor.spec.inputs[0].id]
    sample = Sample(
        original, name_from.relative, results, {k: p for k, p in todo.items() if k in extra}, base
    )
    finished = run.kind.finish_sample(sample, options.output)
    results = grid.restore(results)  # outputs on the input's grid
    if options.output.dtype == "input":
        results = _cast_outputs(predictor.spec, results, np.dtype(original.data.dtype))
    summary.written += finished.written
    if finished.row is not None:
        summary.rows.append(finished.row)

    def write() -> None:
        for tid, path in todo.items():
            if tid in paths:
                summary.written.append(write_output(path, predictor.spec.output(tid), results[tid], fmt))
        summary.written += write_previews(predictor.spec, todo, results, paths)
        files = [*(p for p in todo.values() if p.exists()), *finished.written]  # the kind's overlay too
        done = provenance.complete(record, files, record_path.parent)
        for path in paths.values():
            if fmt == "ome-zarr" and path.is_dir():
                provenance.put_in_store(path, done)
        summary.written.append(provenance.write(done, record_path))  # last: it vouches for them
        summary.done.append(name_from.path)

    if run.overlap is None:
        write()
    else:  # written while the next sample is predicted; its failure is this input's, as above
        run.overlap.write(name_from.path, write)


def _cast_outputs(spec, results: dict[str, Image], dtype) -> dict[str, Image]:
    """The float image outputs in ``dtype`` (the input's: ``dtype="input"``), integers rounded and
    clipped to its range; value tables and integer outputs (labels) as they are."""
    cast = {}
    for tid, image in results.items():
        floating = np.dtype(image.data.dtype).kind == "f" and not is_value_table(spec.output(tid))
        cast[tid] = replace(image, data=cast_to(image.data, dtype)) if floating else image
    return cast


def _check_in_memory(
    run: _Run, inputs: dict[str, InputFile], images: dict[str, Image], name_from: InputFile
) -> None:
    """Before an in-memory prediction: enough memory for it, finite pixels in every input."""
    guards.check_in_memory(run.predictor.spec, name_from.path, images[run.predictor.spec.inputs[0].id])
    for tid, image in images.items():
        guards.check_finite(inputs[tid].path, image)


def _ood_allows(run: _Run, item: InputFile, verdict, summary: Summary, record: dict) -> bool:
    """Record an input's out-of-distribution verdict and say whether its outputs are written
    (``ood="skip"`` writes none for an input out of distribution; ``"fail"`` raises)."""
    record["ood"] = summary.ood[item.path] = verdict.record()
    note = policy_note(verdict, literal(item.path), run.options.inputs.ood)
    if note is not None:
        summary.notes.append(note)
    return not (verdict.out_of_distribution and run.options.inputs.ood == "skip")


def _drop_stale_locks(paths) -> None:
    """The locks that runs killed after finishing these outputs left (a live run's lock stays)."""
    for path in paths:
        if lock_path(path).exists():
            with contextlib.suppress(LockedError):
                OutputLock(path).acquire().release()


def _keeping_statistics(run: _Run, kept: list[dict]) -> Callable[[int, int], None]:
    """The progress callback of a slice-by-slice prediction that also keeps each slice's
    normalisation statistics (``predict_slices`` calls it after each slice) for the record."""

    def progress(done: int, total: int) -> None:
        kept.append(provenance.statistics_section(run.predictor.spec, run.predictor.last_statistics))
        if run.on_tile is not None:
            run.on_tile(done, total)

    return progress


def _stream_one(
    run: _Run,
    image: Image,
    item: InputFile,
    paths: dict[str, Path],
    fmt: str,
    summary: Summary,
    record: dict,
) -> bool:
    """Predict out of core; False when the model cannot stream and streaming was only the default."""
    from emzoo.drivers import streaming

    options = run.options
    output = replace(options.output, format=fmt)
    try:
        if options.stream.client is not None:
            from emzoo.drivers.distributed import InputRef, run_distributed

            source = InputRef(str(item.path.resolve()), options.inputs.stack)
            result = run_distributed(
                run.predictor,
                image,
                source,
                paths,
                output=output,
                inputs=options.inputs,
                stream=options.stream,
                progress=run.on_tile,
                record=record,
            )
        else:
            result = streaming.predict_streaming(
                run.predictor,
                image,
                paths,
                output=output,
                inputs=options.inputs,
                stream=options.stream,
                progress=run.on_tile,
                record=record,
            )
    except UsageError as e:
        if options.stream.enabled is not None or options.stream.client is not None:
            raise
        log.warning("%s: predicted in memory: %s", item.path, e)
        return False
    summary.notes.extend(f"{literal(item.path)}: {note}" for note in result.notes)
    return True
