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
* **Record** (:mod:`emzoo.runtime.stream_store`). The stores are written under hidden names
  (``.NAME.partial``). The first store holds ``.emzoo-stream/run.json`` (model, input, chunking: a
  re-run with other settings refuses to mix its chunks in) and ``.emzoo-stream/done/<chunk>``, one
  small JSON file per finished chunk, written (atomically) only after all of the chunk's outputs
  are stored. A re-run skips the recorded chunks.
* **Finalisation.** Only when every chunk is recorded are the stores finalised (OME-NGFF metadata
  published, :func:`~emzoo.io.formats.zarr_store.finalize_ome_zarr`), the record removed and the
  stores renamed to their final names, so a partial output never looks complete. For MRC, TIFF or
  ``.npy`` outputs, the finished store is converted with the format's writer and removed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from emzoo.errors import InputError, UsageError
from emzoo.io.meta import Image, ImageMeta
from emzoo.runtime import processing
from emzoo.runtime.layout import Layout, apply_layout, input_layout
from emzoo.runtime.predictor import RF_MARGIN, Predictor
from emzoo.runtime.slices import SLICE_AXIS, check_slices, slice_image
from emzoo.runtime.stream_store import RECORD, Stores, finish, header, open_stores, partial_path

__all__ = [
    "RECORD",
    "ChunkRunner",
    "Job",
    "OutputLayout",
    "Stores",
    "Stream",
    "StreamPlan",
    "StreamResult",
    "begin",
    "partial_path",
    "plan_stream",
    "predict_streaming",
]

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]

DEFAULT_CHUNK = {2: 2048, 3: 256}  # input px per tiled axis
STORE_CHUNK = {"z": 64, "y": 512, "x": 512}  # largest chunk of the output store along each axis


@dataclass(frozen=True)
class Job:
    """One chunk: a sample (z slice with --slices, else None) and its index per tiled axis."""

    sample: int | None
    index: tuple[int, ...]

    @property
    def name(self) -> str:
        parts = ([f"s{self.sample}"] if self.sample is not None else []) + [str(i) for i in self.index]
        return "_".join(parts)


@dataclass(frozen=True)
class OutputLayout:
    """How one output tensor is stored: a whole-image array in OME-NGFF axis order."""

    id: str
    axes: str  # of the stored array, NGFF order (t, c, z, y, x)
    shape: tuple[int, ...]
    dtype: str
    store_chunks: tuple[int, ...]
    letters: str  # one sample's output axes, as Predictor.predict returns them (e.g. "cyx")
    ratios: dict[str, float]  # output px per input px along each tiled image axis
    meta: ImageMeta  # axes == self.axes, with the calibration of the output


@dataclass(frozen=True)
class StreamPlan:
    """Everything decided before the first chunk runs; also what a cluster worker needs."""

    input_id: str
    image_axes: str
    image_shape: tuple[int, ...]
    sample_axis: str | None  # "z" when a 2D model runs slice by slice
    tiled: str  # image axis letters cut into chunks, in image order (e.g. "yx", "zyx")
    chunk: tuple[int, ...]  # per tiled axis, input px
    context: tuple[int, ...]
    align: tuple[int, ...]
    min_size: tuple[int, ...]
    outputs: tuple[OutputLayout, ...]
    layout: Layout  # one sample's image axes -> the model input's axes

    @property
    def n_samples(self) -> int:
        if self.sample_axis is None:
            return 1
        return self.image_shape[self.image_axes.index(self.sample_axis)]

    def length(self, letter: str) -> int:
        return self.image_shape[self.image_axes.index(letter)]

    def grid(self) -> tuple[int, ...]:
        return tuple(math.ceil(self.length(a) / c) for a, c in zip(self.tiled, self.chunk, strict=True))

    def jobs(self) -> list[Job]:
        samples = range(self.n_samples) if self.sample_axis is not None else [None]
        indices = list(np.ndindex(*self.grid()))
        return [Job(s, tuple(int(i) for i in index)) for s in samples for index in indices]

    def region(self, job: Job) -> tuple[dict[str, slice], dict[str, slice]]:
        """Per tiled axis: the input region read (chunk + context) and the chunk inside it."""
        read, core = {}, {}
        for k, letter in enumerate(self.tiled):
            n, c, m, a = self.length(letter), self.chunk[k], self.context[k], self.align[k]
            start = job.index[k] * c
            stop = min(start + c, n)
            lo, hi = max(0, start - m), min(n, stop + m)
            need = min(self.min_size[k], n)
            if hi - lo < need:  # too small for the model: widen it (aligned) rather than pad it
                lo = max(0, (hi - need) // a * a)
                hi = min(n, max(hi, lo + need))
            read[letter] = slice(lo, hi)
            core[letter] = slice(start - lo, stop - lo)
        return read, core

    def output_region(self, out: OutputLayout, job: Job) -> tuple[slice, ...]:
        """Where the job's chunk of ``out`` goes in its store."""
        region = []
        for letter in out.axes:
            if letter == self.sample_axis:
                region.append(slice(job.sample, job.sample + 1))
            elif letter in out.ratios:
                k = self.tiled.index(letter)
                start = job.index[k] * self.chunk[k]
                stop = min(start + self.chunk[k], self.length(letter))
                region.append(_scaled(slice(start, stop), out.ratios[letter]))
            else:
                region.append(slice(None))
        return tuple(region)


@dataclass
class StreamResult:
    """What one streamed prediction did."""

    paths: dict[str, Path]
    total: int
    skipped: int = 0
    computed: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- planning


def _sample(image: Image, sample_axis: str | None, index: int = 0) -> Image:
    return slice_image(image, index) if sample_axis is not None else image


def _align_up(n: int, a: int) -> int:
    return -(-n // a) * a


def _store_chunk(letter: str, work: int) -> int:
    """The largest divisor of ``work`` up to STORE_CHUNK[letter]: store chunks never straddle two work
    chunks, so that parallel writers never touch one store chunk."""
    cap = STORE_CHUNK.get(letter, 1)
    if work <= cap:
        return max(work, 1)
    return max(d for d in range(1, cap + 1) if work % d == 0)


def _writable_dtype(dtype: str) -> np.dtype:
    d = np.dtype(dtype)
    if d == np.bool_:
        return np.dtype(np.uint8)
    if d == np.float64:
        return np.dtype(np.float32)
    return d


def plan_stream(
    predictor: Predictor,
    image: Image,
    *,
    slices: bool = False,
    chunk: int | tuple[int, ...] | None = None,
) -> StreamPlan:
    """Decide the chunks, their context and the output stores for streaming ``image`` through the model.

    Raises :class:`UsageError` for models that cannot be streamed (several inputs, outputs that are
    not a fixed scale of the input, post-processing that needs statistics of the whole output) and
    :class:`InputError` for images that do not fit the model.
    """
    from emzoo.io.formats.zarr_store import ngff_axes_order

    spec = predictor.spec
    if len(spec.inputs) != 1:
        raise UsageError(
            f"out-of-core prediction takes one input; the model has {len(spec.inputs)}: "
            "run it in memory (--no-stream)"
        )
    tensor = spec.inputs[0]
    sample_axis = None
    if slices:
        check_slices(predictor)
        if SLICE_AXIS in image.meta.axes:
            sample_axis = SLICE_AXIS
    view = _sample(image, sample_axis)
    layout = input_layout(view.data, view.meta.axes, tensor)
    whole = apply_layout(view.data, layout)
    plan = predictor.plan({tensor.id: whole})
    if plan is None:
        raise UsageError(
            f"the outputs of {spec.name!r} cannot be stitched from tiles, so it cannot run chunk by "
            "chunk: run it in memory (--no-stream)"
        )
    letters = {g.id: g.id for g in plan.grid}
    if any(a not in "zyx" for a in letters):
        raise UsageError(f"out-of-core prediction cuts z, y and x only, not {', '.join(letters)}")
    tiled = "".join(a for a in view.meta.axes if a in letters)
    order = [next(k for k, g in enumerate(plan.grid) if g.id == a) for a in tiled]
    ndim = len(tiled)
    if chunk is None:
        sizes = [DEFAULT_CHUNK.get(ndim, 256)] * ndim
    else:
        sizes = list(chunk) if isinstance(chunk, tuple | list) else [int(chunk)]
        if len(sizes) == 1:
            sizes = sizes * ndim
        if len(sizes) != ndim or min(sizes) < 1:
            raise UsageError(f"--chunk-size takes 1 or {ndim} positive sizes for this model, got {chunk}")
    aligns = [plan.aligns[k] if plan.aligns else 1 for k in order]
    rfs = list(plan.receptive_field)
    if any(r is None for r in rfs):  # the whole image fits one block: measure it for the chunks
        rfs = predictor._receptive_field(plan.grid, plan.outputs)
    if any(r is None for r in rfs):
        log.warning(
            "the receptive field of %s could not be measured: chunks get the declared halo as context, "
            "so results within it of chunk edges may differ slightly from an in-memory run",
            spec.name,
        )
    chunks, contexts, mins = [], [], []
    for n, k, a in zip(sizes, order, aligns, strict=True):
        ax = plan.axes[k]
        if ax.pad_before:
            raise UsageError(
                "out-of-core prediction needs outputs as large as (or a fixed scale of) the input; "
                "this model crops its output: run it in memory (--no-stream)"
            )
        rf = rfs[k]
        contexts.append(_align_up(max(ax.halo, (rf + RF_MARGIN) if rf is not None else 0), a))
        chunks.append(_align_up(n, a))
        rule = plan.grid[k].rule
        mins.append(rule.fixed or rule.min or 1)
    outputs = []
    for t in spec.outputs:
        if any(processing.needs_stats(op) for op in t.processing):
            raise UsageError(
                f"output {t.id!r} is post-processed with statistics of the whole output "
                f"({', '.join(op.id for op in t.processing if processing.needs_stats(op))}), which "
                "chunks cannot compute: run it in memory (--no-stream)"
            )
        op = plan.outputs[t.id]
        if any(m.offset for m in op.maps):
            raise UsageError(f"output {t.id!r} is offset from the input: run it in memory (--no-stream)")
        ratios = {tiled[i]: op.maps[k].ratio for i, k in enumerate(order)}
        dummy_shape = []
        for axis in t.axes:
            if axis.type == "channel":
                dummy_shape.append(t.n_channels or 1)
            elif axis.type == "batch" or axis.is_spatial:
                dummy_shape.append(1)
            elif axis.size is not None:
                dummy_shape.append(axis.size)
            else:
                raise UsageError(
                    f"output {t.id!r} has a data-dependent axis {axis.id!r}: it cannot be streamed"
                )
        sample_out = predictor._to_image(t, np.zeros(dummy_shape, np.float32), view.meta)
        per_sample = sample_out.meta.axes
        full_axes = (sample_axis or "") + per_sample
        shape = []
        for letter in full_axes:
            if letter == sample_axis:
                shape.append(image.shape[image.meta.axes.index(letter)])
            elif letter in ratios:
                shape.append(round(view.shape[view.meta.axes.index(letter)] * ratios[letter]))
            else:
                shape.append(sample_out.data.shape[per_sample.index(letter)])
        try:
            ngff = ngff_axes_order(full_axes)
        except InputError as e:
            raise UsageError(f"output {t.id!r} cannot be stored as OME-Zarr: {e}") from None
        perm = [full_axes.index(a) for a in ngff]
        store_chunks = []
        for letter in ngff:
            if letter in ratios:
                work = round(chunks[tiled.index(letter)] * ratios[letter])
                store_chunks.append(min(_store_chunk(letter, work), shape[full_axes.index(letter)]))
            else:
                store_chunks.append(1)
        pixel_size = dict(sample_out.meta.pixel_size)
        if sample_axis is not None and sample_axis in image.meta.pixel_size and pixel_size:
            pixel_size[sample_axis] = image.meta.pixel_size[sample_axis]
        meta = replace(
            sample_out.meta,
            axes=ngff,
            pixel_size=pixel_size,
            source=image.meta.source,
            format="ome-zarr",
            header={},
        )
        outputs.append(
            OutputLayout(
                id=t.id,
                axes=ngff,
                shape=tuple(int(shape[p]) for p in perm),
                dtype=_writable_dtype(t.dtype).str,
                store_chunks=tuple(store_chunks),
                letters=per_sample,
                ratios=ratios,
                meta=meta,
            )
        )
    return StreamPlan(
        input_id=tensor.id,
        image_axes=image.meta.axes,
        image_shape=image.shape,
        sample_axis=sample_axis,
        tiled=tiled,
        chunk=tuple(chunks),
        context=tuple(contexts),
        align=tuple(aligns),
        min_size=tuple(mins),
        outputs=tuple(outputs),
        layout=layout,
    )


# ---------------------------------------------------------------------------------------- computing


class ChunkRunner:
    """Runs the chunks of one image with a loaded model; keeps each sample's statistics."""

    def __init__(self, predictor: Predictor, image: Image, plan: StreamPlan):
        self.predictor, self.image, self.plan = predictor, image, plan
        self._stats: dict[int | None, dict] = {}

    def whole(self, sample: int | None):
        """The (lazy) model-axes tensor of one whole sample."""
        view = _sample(self.image, self.plan.sample_axis, sample or 0)
        return view, apply_layout(view.data, self.plan.layout)

    def statistics(self, sample: int | None) -> dict:
        """The sample's normalisation statistics: one streaming pass over it, the first time."""
        if sample not in self._stats:
            if len(self._stats) > 4:
                self._stats.pop(next(iter(self._stats)))
            t0 = time.perf_counter()
            _, whole = self.whole(sample)
            self._stats[sample] = self.predictor.input_statistics({self.plan.input_id: whole})
            log.info("statistics of sample %s: %.1f s", sample, time.perf_counter() - t0)
        return self._stats[sample]

    def compute(self, job: Job, stats: dict | None = None) -> dict[str, np.ndarray]:
        """The job's chunk of every output, in its store's axis order and dtype."""
        plan = self.plan
        view, whole = self.whole(job.sample)
        read, core = plan.region(job)
        index = tuple(read.get(a, slice(None)) for a in view.meta.axes)
        block = apply_layout(np.asarray(view.data[index]), plan.layout)
        stats = stats if stats is not None else self.statistics(job.sample)
        results = self.predictor.run(
            {plan.input_id: block}, statistics_from={plan.input_id: whole}, statistics=stats
        )
        blocks = {}
        for out in plan.outputs:
            tensor = self.predictor.spec.output(out.id)
            arr = np.asarray(self.predictor._to_image(tensor, results[out.id], view.meta).data)
            crop = tuple(
                _scaled(core[a], out.ratios[a]) if a in out.ratios else slice(None) for a in out.letters
            )
            arr = arr[crop]
            letters = out.letters
            if plan.sample_axis is not None:
                arr, letters = arr[None], plan.sample_axis + letters
            arr = np.transpose(arr, [letters.index(a) for a in out.axes])
            blocks[out.id] = np.ascontiguousarray(arr.astype(out.dtype, copy=False))
        return blocks


def _scaled(s: slice, ratio: float) -> slice:
    return slice(round(s.start * ratio), round(s.stop * ratio))


@dataclass
class Stream:
    """A streamed prediction, planned and with its stores open: the chunks still to do."""

    plan: StreamPlan
    stores: Stores
    finals: dict[str, Path]
    output_format: str
    todo: list[Job]
    result: StreamResult

    def finish(self) -> StreamResult:
        finish(self.plan, self.stores, self.finals, self.output_format)
        return self.result


def begin(
    predictor: Predictor,
    image: Image,
    finals: Mapping[str, Path],
    *,
    output_format: str = "ome-zarr",
    slices: bool = False,
    chunk: int | tuple[int, ...] | None = None,
    overwrite: bool = False,
) -> Stream:
    """Plan, open (or resume) the stores, and list the chunks that are not recorded as done."""
    plan = plan_stream(predictor, image, slices=slices, chunk=chunk)
    run_header = header(predictor, image, plan, output_format)
    stores = open_stores(plan, finals, output_format, run_header, overwrite=overwrite)
    jobs = plan.jobs()
    done = stores.done()
    todo = [j for j in jobs if j.name not in done]
    result = StreamResult(paths=dict(finals), total=len(jobs), skipped=len(jobs) - len(todo))
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
    return Stream(plan, stores, {k: Path(v) for k, v in finals.items()}, output_format, todo, result)


def predict_streaming(
    predictor: Predictor,
    image: Image,
    finals: Mapping[str, Path],
    *,
    output_format: str = "ome-zarr",
    slices: bool = False,
    chunk: int | tuple[int, ...] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> StreamResult:
    """Predict ``image`` chunk by chunk into ``finals`` (output id -> final path), resumably.

    Examples
    --------
    >>> from emzoo.io import read_image
    >>> p = Predictor("model.zip")  # doctest: +SKIP
    >>> image = read_image("big.ome.zarr")  # doctest: +SKIP
    >>> predict_streaming(p, image, {"prob": Path("big_prob.ome.zarr")})  # doctest: +SKIP
    """
    start = time.perf_counter()
    stream = begin(
        predictor,
        image,
        finals,
        output_format=output_format,
        slices=slices,
        chunk=chunk,
        overwrite=overwrite,
    )
    runner = ChunkRunner(predictor, image, stream.plan)
    result = stream.result
    for job in stream.todo:
        t0 = time.perf_counter()
        blocks = runner.compute(job)
        stream.stores.write(stream.plan, job, blocks)
        stream.stores.mark_done(job, time.perf_counter() - t0)
        result.computed += 1
        if progress is not None:
            progress(result.skipped + result.computed, result.total)
    stream.finish()
    result.seconds = time.perf_counter() - start
    return result
