"""Chunk plans for out-of-core prediction: how a lazy image is cut into chunks with context, and the
whole-image output stores those chunks are written into (see :mod:`emzoo.drivers.streaming` for the
design). Planning reads shapes only; nothing here runs the model.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import numpy as np

from emzoo.drivers.slices import SLICE_AXIS, check_slices, slice_image
from emzoo.errors import InputError, UsageError
from emzoo.io.meta import Image, ImageMeta
from emzoo.io.write import writable_dtype
from emzoo.package.spec import TensorSpec
from emzoo.runtime import processing
from emzoo.runtime.layout import Layout, apply_layout, input_layout
from emzoo.runtime.planning import RF_MARGIN, OutputPlan
from emzoo.runtime.predictor import Predictor

log = logging.getLogger(__name__)

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
    keep_axes: bool = False  # outputs keep every declared axis but batch (Predictor.to_image)

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
                region.append(scaled(slice(start, stop), out.ratios[letter]))
            else:
                region.append(slice(None))
        return tuple(region)


def sample_view(image: Image, sample_axis: str | None, index: int = 0) -> Image:
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


def plan_stream(
    predictor: Predictor,
    image: Image,
    *,
    slices: bool = False,
    chunk: int | tuple[int, ...] | None = None,
    keep_axes: bool = False,
) -> StreamPlan:
    """Decide the chunks, their context and the output stores for streaming ``image`` through the model.

    Raises :class:`UsageError` for models that cannot be streamed (several inputs, outputs that are
    not a fixed scale of the input, post-processing that needs statistics of the whole output) and
    :class:`InputError` for images that do not fit the model.
    """
    spec = predictor.spec
    if len(spec.inputs) != 1:
        raise UsageError(
            f"out-of-core prediction takes one input; the model has {len(spec.inputs)}: "
            "run it in memory ({stream=False})"
        )
    tensor = spec.inputs[0]
    sample_axis = None
    if slices:
        check_slices(predictor)
        if SLICE_AXIS in image.meta.axes:
            sample_axis = SLICE_AXIS
    view = sample_view(image, sample_axis)
    layout = input_layout(view.data, view.meta.axes, tensor)
    whole = apply_layout(view.data, layout)
    plan = predictor.plan({tensor.id: whole})
    if plan is None:
        raise UsageError(
            f"the outputs of {spec.name!r} cannot be stitched from tiles, so it cannot run chunk by "
            "chunk: run it in memory ({stream=False})"
        )
    letters = {g.id: g.id for g in plan.grid}
    if any(a not in "zyx" for a in letters):
        raise UsageError(f"out-of-core prediction cuts z, y and x only, not {', '.join(letters)}")
    per_slice = processing.varying_axes(tensor.processing, tensor.axis_ids) & set(letters)
    if per_slice:
        raise UsageError(
            f"input {tensor.id!r} is normalised per {'/'.join(sorted(per_slice))} position, along an "
            "axis that chunks cut: run it in memory ({stream=False})"
        )
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
            raise UsageError(f"{{chunk}} takes 1 or {ndim} positive sizes for this model, got {chunk}")
    aligns = [plan.aligns[k] if plan.aligns else 1 for k in order]
    rfs = list(plan.receptive_field)
    if any(r is None for r in rfs):  # the whole image fits one block: measure it for the chunks
        rfs = predictor.receptive_field(plan.grid, plan.outputs)
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
                "this model crops its output: run it in memory ({stream=False})"
            )
        rf = rfs[k]
        contexts.append(_align_up(max(ax.halo, (rf + RF_MARGIN) if rf is not None else 0), a))
        chunks.append(_align_up(n, a))
        rule = plan.grid[k].rule
        mins.append(rule.fixed or rule.min or 1)
    where = _Where(image, view, sample_axis, tiled, order, chunks, keep_axes)
    outputs = [_output_layout(predictor, t, plan.outputs[t.id], where) for t in spec.outputs]
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
        keep_axes=keep_axes,
    )


@dataclass(frozen=True)
class _Where:
    """What every output's store layout depends on."""

    image: Image
    view: Image  # one sample of it
    sample_axis: str | None
    tiled: str
    order: list[int]
    chunks: list[int]
    keep_axes: bool = False


def _output_layout(predictor: Predictor, t: TensorSpec, out_plan: OutputPlan, where: _Where) -> OutputLayout:
    """The whole-image store of output ``t`` (tiled as ``out_plan``); a usage error if it cannot stream."""
    from emzoo.io.formats.zarr_store import ngff_axes_order

    image, view, sample_axis, tiled, order, chunks = (
        where.image,
        where.view,
        where.sample_axis,
        where.tiled,
        where.order,
        where.chunks,
    )
    spatial = {a.id for a in t.axes if a.is_spatial}
    if any(processing.needs_own_stats(op) for op in t.processing) or (
        processing.varying_axes(t.processing, t.axis_ids) & spatial
    ):
        raise UsageError(
            f"output {t.id!r} is post-processed with statistics of the whole output "
            f"({', '.join(op.id for op in t.processing if processing.needs_stats(op))}), which "
            "chunks cannot compute: run it in memory ({stream=False})"
        )
    if any(m.offset for m in out_plan.maps):
        raise UsageError(f"output {t.id!r} is offset from the input: run it in memory ({{stream=False}})")
    ratios = {tiled[i]: out_plan.maps[k].ratio for i, k in enumerate(order)}
    dummy_shape = []
    for axis in t.axes:
        if axis.type == "channel":
            dummy_shape.append(t.n_channels or 1)
        elif axis.type == "batch" or axis.is_spatial:
            dummy_shape.append(1)
        elif axis.size is not None:
            dummy_shape.append(axis.size)
        else:
            raise UsageError(f"output {t.id!r} has a data-dependent axis {axis.id!r}: it cannot be streamed")
    dummy = np.zeros(dummy_shape, np.float32)
    sample_out = predictor.to_image(t, dummy, view.meta, keep_axes=where.keep_axes)
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
    return OutputLayout(
        id=t.id,
        axes=ngff,
        shape=tuple(int(shape[p]) for p in perm),
        dtype=writable_dtype(t.dtype).str,
        store_chunks=tuple(store_chunks),
        letters=per_sample,
        ratios=ratios,
        meta=meta,
    )


def scaled(s: slice, ratio: float) -> slice:
    return slice(round(s.start * ratio), round(s.stop * ratio))
