"""Out-of-core prediction: a lazy input (Zarr, OME-Zarr, MRC, uncompressed TIFF, a slice folder) is
predicted chunk by chunk into OME-Zarr stores, with memory independent of the image size, and an
interrupted run resumes where it stopped.

Design (see also ``docs/dask_clusters.md``, which runs the same chunks on a cluster):

* **Chunks.** The image is cut into chunks of ``chunk`` input pixels per tiled axis (default 2048
  in-plane for 2D models, 256 per axis for 3D models; with ``--slices`` every z slice is a sample of
  its own and is cut in-plane). Chunk edges are multiples of the model's alignment (its down-sampling
  step and output scale), so that pooling windows line up with those of a whole-image run.
* **Context.** Each chunk reads the input region ``chunk ± context``, with ``context`` = the plan's
  halo, or the measured receptive field + 2 px where that is larger, rounded up to the alignment; at
  least the model's smallest input. The region goes through :meth:`Predictor.run` (which tiles it as
  usual), the context is cropped and the chunk is written into the output store. Where the context
  covers the receptive field, the result equals the in-memory prediction up to float rounding.
* **Statistics.** Per-sample normalisation statistics (mean/std exact; percentiles exact for integer
  images, within ``range / 2**20`` for floats: :func:`emzoo.runtime.processing.quantiles`) come from
  one streaming pass over the whole (lazy) sample before its first chunk, and are shared by all its
  chunks (``Predictor.run(..., statistics_from=whole, statistics=stats)``).
* **Record** (:mod:`emzoo.drivers.stream_store`). The stores are written under hidden names
  (``.NAME.partial``). The first store holds ``.emzoo-stream/run.json`` (model, input, chunking: a
  re-run with other settings refuses to mix its chunks in) and ``.emzoo-stream/done/<chunk>``, one
  small JSON file per finished chunk, written (atomically) only after all of the chunk's outputs
  are stored. A re-run skips the recorded chunks.
* **Finalisation.** Only when every chunk is recorded are the stores finalised (OME-NGFF metadata
  published, :func:`~emzoo.io.formats.zarr_store.finalize_ome_zarr`), the record removed and the
  stores renamed to their final names, so a partial output never looks complete. For MRC, TIFF or
  ``.npy`` outputs, the finished store is converted with the format's writer and removed.
* **Provenance** (:mod:`emzoo.drivers.provenance`). Each sample's statistics are kept in the stream's
  record before its first chunk is marked done (a resumed run reports them too); the provenance
  record goes into the OME-Zarr stores' attributes before they are renamed, and beside them last.
* **One writer per output.** From planning to finalisation a run holds the lock of each final output
  (``.NAME.lock``, :func:`emzoo.atomic.output_lock`): a second run into the same output refuses with
  the PID of the first; the lock of a run that died is taken over.
* **No silent garbage.** A float input with NaN or ±Inf pixels is refused: its statistics are checked
  before the first chunk, and each chunk's pixels before they are predicted.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emzoo.atomic import OutputLock
from emzoo.drivers import provenance
from emzoo.drivers.chunks import Job, StreamPlan, plan_stream, sample_view, scaled
from emzoo.drivers.options import InputOptions, OutputOptions, RunOptions, StreamOptions
from emzoo.drivers.stream_store import Stores, finish, header, open_stores
from emzoo.errors import InputError
from emzoo.io.meta import Image
from emzoo.runtime.layout import apply_layout
from emzoo.runtime.predictor import Predictor

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


@dataclass
class StreamResult:
    """What one streamed prediction did."""

    paths: dict[str, Path]
    total: int
    skipped: int = 0
    computed: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    record: Path | None = None  # the provenance record beside the outputs (emzoo.drivers.provenance)


# ---------------------------------------------------------------------------------------- computing


class ChunkRunner:
    """Runs the chunks of one image with a loaded model; keeps each sample's statistics."""

    def __init__(self, predictor: Predictor, image: Image, plan: StreamPlan):
        self.predictor, self.image, self.plan = predictor, image, plan
        self._stats: dict[int | None, dict] = {}

    def whole(self, sample: int | None):
        """The (lazy) model-axes tensor of one whole sample."""
        view = sample_view(self.image, self.plan.sample_axis, sample or 0)
        return view, apply_layout(view.data, self.plan.layout)

    def statistics(self, sample: int | None) -> dict:
        """The sample's normalisation statistics: one streaming pass over it, the first time."""
        if sample not in self._stats:
            if len(self._stats) > 4:
                self._stats.pop(next(iter(self._stats)))
            t0 = time.perf_counter()
            _, whole = self.whole(sample)
            stats = self.predictor.input_statistics({self.plan.input_id: whole})
            if not _finite(stats):
                raise InputError(
                    f"{self.image.meta.source}: the image holds NaN or ±Inf pixels (its statistics are "
                    "not finite): the model would predict NaN; replace them (e.g. with the image's "
                    "mean) first"
                )
            self._stats[sample] = stats
            log.info("statistics of sample %s: %.1f s", sample, time.perf_counter() - t0)
        return self._stats[sample]

    def compute(self, job: Job, stats: dict | None = None) -> dict[str, np.ndarray]:
        """The job's chunk of every output, in its store's axis order and dtype."""
        plan = self.plan
        view, whole = self.whole(job.sample)
        read, core = plan.region(job)
        index = tuple(read.get(a, slice(None)) for a in view.meta.axes)
        block = apply_layout(np.asarray(view.data[index]), plan.layout)
        if block.dtype.kind in "fc" and not np.isfinite(block).all():
            raise InputError(
                f"{self.image.meta.source}: chunk {job.name} holds NaN or ±Inf pixels: the model would "
                "predict NaN; replace them (e.g. with the image's mean) first"
            )
        stats = stats if stats is not None else self.statistics(job.sample)
        results = self.predictor.run(
            {plan.input_id: block}, statistics_from={plan.input_id: whole}, statistics=stats
        )
        blocks = {}
        for out in plan.outputs:
            tensor = self.predictor.spec.output(out.id)
            image = self.predictor.to_image(tensor, results[out.id], view.meta, keep_axes=plan.keep_axes)
            arr = np.asarray(image.data)
            crop = tuple(
                scaled(core[a], out.ratios[a]) if a in out.ratios else slice(None) for a in out.letters
            )
            arr = arr[crop]
            letters = out.letters
            if plan.sample_axis is not None:
                arr, letters = arr[None], plan.sample_axis + letters
            arr = np.transpose(arr, [letters.index(a) for a in out.axes])
            blocks[out.id] = np.ascontiguousarray(arr.astype(out.dtype, copy=False))
        return blocks


def _finite(stats) -> bool:
    """Are all numbers in the (nested) statistics finite?"""
    if isinstance(stats, Mapping):
        return all(_finite(v) for v in stats.values())
    if isinstance(stats, list | tuple):
        return all(_finite(v) for v in stats)
    if isinstance(stats, np.ndarray | np.generic | float):
        arr = np.asarray(stats)
        return arr.dtype.kind not in "fc" or bool(np.isfinite(arr).all())
    return True


def _release(locks: list[OutputLock]) -> None:
    for lock in reversed(locks):
        lock.release()


@dataclass
class Stream:
    """A streamed prediction, planned and with its stores open: the chunks still to do. It holds the
    locks of its outputs until :meth:`finish` or :meth:`close` (or until it is garbage-collected)."""

    plan: StreamPlan
    stores: Stores
    finals: dict[str, Path]
    output_format: str
    todo: list[Job]
    result: StreamResult
    record: dict  # the provenance record, completed by finish (emzoo.drivers.provenance)
    locks: list[OutputLock] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._release = weakref.finalize(self, _release, list(self.locks))

    def finish(self) -> StreamResult:
        try:
            self.result.record = finish(self.plan, self.stores, self.finals, self.output_format, self.record)
        finally:
            self.close()
        return self.result

    def keep_statistics(self, predictor: Predictor, sample: int | None, stats: dict) -> None:
        """Keep a sample's statistics for the provenance record (before its chunks are marked done)."""
        self.stores.keep_statistics(sample, provenance.statistics_section(predictor.spec, stats))

    def close(self) -> None:
        """Release the output locks (the partial stores stay, for a re-run to resume)."""
        self._release()


def lock_outputs(finals: Mapping[str, Path]) -> list[OutputLock]:
    """The locks of every final output, in a fixed order (all or none)."""
    locks: list[OutputLock] = []
    try:
        for final in sorted({Path(p) for p in finals.values()}):
            locks.append(OutputLock(final).acquire())
    except BaseException:
        _release(locks)
        raise
    return locks


def begin(
    predictor: Predictor,
    image: Image,
    finals: Mapping[str, Path],
    *,
    output: OutputOptions,
    inputs: InputOptions | None = None,
    stream: StreamOptions | None = None,
    record: dict | None = None,
) -> Stream:
    """Plan, open (or resume) the stores, and list the chunks that are not recorded as done.

    ``output.format`` is the format of the final outputs (``ome-zarr``, or one the finished store is
    converted to); ``record``: the provenance record begun by the caller (:func:`provenance.begin`;
    None: begun here)."""
    inputs, stream = inputs or InputOptions(), stream or StreamOptions()
    fmt = output.format or "ome-zarr"
    plan = plan_stream(predictor, image, slices=inputs.slices, chunk=stream.chunk, keep_axes=output.keep_axes)
    run_header = header(predictor, image, plan, fmt)
    if record is None:
        options = RunOptions(output=output, inputs=inputs, stream=stream)
        sources = {plan.input_id: image.meta.source}
        record = provenance.begin(predictor, {plan.input_id: image}, sources, options=options)
    locks = lock_outputs(finals)
    try:
        stores = open_stores(plan, finals, fmt, run_header, overwrite=output.overwrite)
    except BaseException:
        _release(locks)
        raise
    jobs = plan.jobs()
    done = stores.done()
    todo = [j for j in jobs if j.name not in done]
    result = StreamResult(paths=dict(finals), total=len(jobs), skipped=len(jobs) - len(todo))
    record = {**record, "runtime": {**record["runtime"], "stream": _stream_section(plan, result, stream)}}
    if result.skipped:
        note = (
            f"resumed {Path(finals[plan.outputs[0].id]).name}: {result.skipped} of {len(jobs)} "
            "chunks were done already and are skipped"
        )
        log.warning("%s", note)
        result.notes.append(note)
    log.info(
        "streaming %s: %d chunks of %s px (context %s px) into %s",
        image.meta.source,
        len(jobs),
        list(plan.chunk),
        list(plan.context),
        ", ".join(stores.paths.values()),
    )
    finals = {k: Path(v) for k, v in finals.items()}
    return Stream(plan, stores, finals, fmt, todo, result, record, locks)


def _stream_section(plan: StreamPlan, result: StreamResult, stream: StreamOptions) -> dict:
    """How an out-of-core run cut the image (for the provenance record)."""
    client = stream.client
    address = (
        client if isinstance(client, str) else getattr(getattr(client, "scheduler", None), "address", None)
    )
    return {
        "chunk": list(plan.chunk),
        "context": list(plan.context),
        "chunks": result.total,
        "done_before": result.skipped,
        "dask": None if client is None else (address or "a dask client"),
    }


def predict_streaming(
    predictor: Predictor,
    image: Image,
    finals: Mapping[str, Path],
    *,
    output: OutputOptions | None = None,
    inputs: InputOptions | None = None,
    stream: StreamOptions | None = None,
    progress: Progress | None = None,
    record: dict | None = None,
) -> StreamResult:
    """Predict ``image`` chunk by chunk into ``finals`` (output id -> final path), resumably, here;
    the provenance ``record`` begun by the caller (None: begun here) is written beside them.

    Examples
    --------
    >>> from emzoo.io import read_image
    >>> p = Predictor("model.zip")  # doctest: +SKIP
    >>> image = read_image("big.ome.zarr")  # doctest: +SKIP
    >>> predict_streaming(p, image, {"prob": Path("big_prob.ome.zarr")})  # doctest: +SKIP
    """
    start = time.perf_counter()
    output = output or OutputOptions()
    run = begin(predictor, image, finals, output=output, inputs=inputs, stream=stream, record=record)
    runner = ChunkRunner(predictor, image, run.plan)
    result = run.result
    try:
        for job in run.todo:
            t0 = time.perf_counter()
            blocks = runner.compute(job)
            if not result.computed:  # the tiling of a chunk, for the provenance record
                run.record["runtime"].update(provenance.tiling(predictor))
            run.keep_statistics(predictor, job.sample, runner.statistics(job.sample))
            run.stores.write(run.plan, job, blocks)
            run.stores.mark_done(job, time.perf_counter() - t0)
            result.computed += 1
            if progress is not None:
                progress(result.skipped + result.computed, result.total)
        run.finish()
    except InputError:
        if not run.stores.done():  # refused before its first chunk (a bad input): nothing to resume
            run.stores.discard()
        raise
    finally:
        run.close()
    result.seconds = time.perf_counter() - start
    return result
