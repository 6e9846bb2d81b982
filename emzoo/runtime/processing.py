"""The bioimage.io spec 0.5 pre- and post-processing operations, on numpy arrays.

Statistics (mean, std, percentiles) are always taken from the whole image, never from a tile:
:func:`bind` computes them once and returns a function that any tile can go through. As in
bioimageio.core, every statistic is that of a tensor as it enters its pre- or post-processing (the raw
input, the network's output), also for ops that follow other ops, and ``reference_tensor`` names a
model input, taken as given. Following bioimage.io, an op's ``axes`` are the axes reduced over;
``axes: null`` reduces over all axes. emzoo has no dataset at prediction time, so "dataset" statistics
are those of the image being processed (the same as bioimageio.core gives for one sample).

Statistics of lazy images (zarr, memory-mapped files, :class:`~emzoo.runtime.layout.LayoutView`) are
computed in streaming passes over row chunks, so an image larger than memory is never loaded whole:
mean and std exactly, percentiles exactly for integer data and within a documented bound for floats
(see :func:`quantiles`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import softmax as _softmax

from emzoo.package.spec import Op, TensorSpec

TileFn = Callable[[np.ndarray], np.ndarray]
Stats = tuple  # the statistics one op needs, as plain numpy arrays (see :func:`bind`'s ``memo``)
STAT_OPS = frozenset({"zero_mean_unit_variance", "scale_range", "scale_mean_variance"})
KNOWN_OPS = frozenset(
    {
        "binarize",
        "clip",
        "ensure_dtype",
        "fixed_zero_mean_unit_variance",
        "scale_linear",
        "scale_mean_variance",
        "scale_range",
        "sigmoid",
        "softmax",
        "zero_mean_unit_variance",
    }
)

# np.quantile (exact, but it copies and partitions the data) below this many elements in memory
IN_MEMORY_QUANTILE_LIMIT = 2**24
FLOAT_BINS = 2**20  # histogram bins per group for float percentiles (error <= range / FLOAT_BINS)
EXACT_INT_SPAN = 2**22  # integer data whose values span at most this many get an exact histogram
READ_ELEMENTS = 2**22  # elements per read when streaming over a lazy array


@dataclass(frozen=True)
class Tensor:
    """An array with its axis ids (in the model's order)."""

    data: np.ndarray
    axes: tuple[str, ...]


def needs_stats(op: Op) -> bool:
    """The op needs statistics (of its tensor or of a reference tensor)."""
    if op.id == "clip":
        return op.kwargs.get("min_percentile") is not None or op.kwargs.get("max_percentile") is not None
    return op.id in STAT_OPS


def needs_own_stats(op: Op) -> bool:
    """The op needs statistics of the tensor it processes (not only of a reference tensor): for a model
    output, of the whole output."""
    return needs_stats(op) and not (op.id == "scale_range" and op.kwargs.get("reference_tensor"))


def varying_axes(ops: Sequence[Op], axes: Sequence[str]) -> set[str]:
    """The axes (of ``axes``) along which the ops' statistics change, those a statistic keeps (e.g.
    ``y`` for per-slice statistics over ``z, x``): a block cut along one of them needs the values
    for its own positions, so it cannot be processed alone."""
    found: set[str] = set()
    for op in ops:
        reduced = op.kwargs.get("axes")
        if needs_stats(op) and reduced is not None:
            found |= {a for a in axes if a not in reduced and a != "batch"}
    return found


def _reduce_axes(t: Tensor, axes: Sequence[str] | None) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(t.data.ndim))
    missing = [a for a in axes if a not in t.axes]
    if missing:
        raise ValueError(f"processing refers to axes {missing} that the tensor ({t.axes}) lacks")
    return tuple(t.axes.index(a) for a in axes)


def in_memory(data) -> bool:
    """A plain numpy array (not a memory map, not a lazy store)."""
    return isinstance(data, np.ndarray) and not isinstance(data, np.memmap)


def storage_chunks(data) -> tuple[int, ...] | None:
    """The chunk shape a lazy array is stored in (zarr, or a :class:`LayoutView` over one), if known."""
    chunks = getattr(data, "chunks", None)
    if (
        isinstance(chunks, tuple)
        and len(chunks) == len(data.shape)
        and all(isinstance(c, int | np.integer) for c in chunks)
    ):
        return tuple(int(c) for c in chunks)
    source, layout = getattr(data, "source", None), getattr(data, "layout", None)
    if source is not None and layout is not None and hasattr(layout, "order"):
        inner = storage_chunks(source)
        if inner is not None:
            return tuple(1 if d is None else inner[d] for d in layout.order)
    return None


def _blocks(t: Tensor, dims: tuple[int, ...]):
    """The tensor as numpy pieces that cut only reduced axes, so that temporaries stay small.

    In-memory arrays are cut into views of 256 rows along the longest reduced axis. Lazy ones are
    read in tiles of whole storage chunks (no chunk is decoded twice) of about :data:`READ_ELEMENTS`
    elements, whatever the size of the image, and handed out in pieces of at most that many.
    """
    if not dims:
        yield np.asarray(t.data)
        return
    shape = tuple(int(n) for n in t.data.shape)
    k = max(dims, key=lambda d: shape[d])

    def rows_of(data, lo: int, hi: int):
        index = [slice(None)] * len(shape)
        index[k] = slice(lo, hi)
        return data[tuple(index)]

    if in_memory(t.data):
        for start in range(0, shape[k], 256):
            yield rows_of(t.data, start, start + 256)
        return
    stored = storage_chunks(t.data)
    if stored is None:  # a memory map or unknown layout: cut the outermost axis (contiguous reads)
        k = next((d for d in sorted(dims) if shape[d] > 1), k)
        tile = [n if d != k else 1 for d, n in enumerate(shape)]
    else:
        tile = [n if d not in dims else max(1, min(n, stored[d])) for d, n in enumerate(shape)]
    for d in sorted(dims, key=lambda d: (d != k, -shape[d])):  # grow by whole chunks to READ_ELEMENTS
        across = math.prod(tile) // tile[d]
        tile[d] = min(shape[d], max(tile[d], READ_ELEMENTS // max(across, 1) // tile[d] * tile[d]))
    rows = max(1, READ_ELEMENTS // max(1, math.prod(tile) // tile[k]))
    for corner in itertools.product(*(range(0, n, s) for n, s in zip(shape, tile, strict=True))):
        region = tuple(slice(c, c + s) for c, s in zip(corner, tile, strict=True))
        block = np.asarray(t.data[region])
        for sub in range(0, block.shape[k], rows):
            yield rows_of(block, sub, sub + rows)


def mean_std(t: Tensor, axes: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std over ``axes`` (kept as length-1 dims, so they broadcast).

    Exact, in float64, in two passes over row blocks: works on memory-mapped and lazy arrays
    without loading them whole. Integers of up to 16 bits (most EM images) take one pass, through a
    histogram of their values (10-20x faster than summing floats over the image).
    """
    dims = _reduce_axes(t, axes)
    count = int(np.prod([t.data.shape[d] for d in dims])) if dims else 1
    value_bins = _value_bins(np.dtype(t.data.dtype))
    if dims and count and value_bins is not None:
        return _integer_mean_std(t, dims, count, *value_bins)
    total = sum(np.sum(b, axis=dims, keepdims=True, dtype=np.float64) for b in _blocks(t, dims))
    mean = total / count
    squares = sum(
        np.sum(np.square(np.asarray(b, dtype=np.float64) - mean), axis=dims, keepdims=True)
        for b in _blocks(t, dims)
    )
    return mean, np.sqrt(squares / count)


def _value_bins(dtype: np.dtype) -> tuple[int, int] | None:
    """``(lowest value, number of values)`` of a dtype small enough for one histogram bin per value
    (booleans, integers of up to 16 bits), else None."""
    if dtype.kind == "b" or (dtype.kind in "iu" and dtype.itemsize <= 2):
        info = np.iinfo(np.uint8 if dtype.kind == "b" else dtype)
        return int(info.min), int(info.max) - int(info.min) + 1
    return None


def _integer_mean_std(
    t: Tensor, dims: tuple[int, ...], count: int, lowest: int, bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mean_std` from one histogram per group of the kept axes, one bin per possible value."""
    values = np.arange(lowest, lowest + bins, dtype=np.float64)
    counts = _histogram(t, dims, np.full(1, float(lowest)), bins, np.ones(1), exact=True)
    mean = counts @ values / count
    var = np.einsum("gv,gv->g", counts, np.square(values[None, :] - mean[:, None])) / count
    keep_shape = [1 if d in dims else int(n) for d, n in enumerate(t.data.shape)]
    return mean.reshape(keep_shape), np.sqrt(var).reshape(keep_shape)


def quantiles(t: Tensor, axes: Sequence[str] | None, qs: Sequence[float], method: str) -> list[np.ndarray]:
    """Quantiles ``qs`` (0..1) over ``axes`` with numpy's ``method`` (``linear`` or ``inverted_cdf``).

    In-memory arrays of up to :data:`IN_MEMORY_QUANTILE_LIMIT` elements go through ``np.quantile``.
    Larger or lazy ones (zarr, memory maps) are streamed through histograms, one per group of the
    axes that are not reduced, without loading the data whole:

    * integer data (``uint8``, ``int8``, ``uint16``, ``int16`` always; wider integers whose values
      span at most :data:`EXACT_INT_SPAN`): one bin per value, so the order statistics, and hence
      the quantiles, are **exact** (equal to ``np.quantile``);
    * floats (and wider integer ranges): a first pass finds each group's min and max, a second
      counts the values in :data:`FLOAT_BINS` equal bins between them. An order statistic is
      placed inside its bin, so its error is below one bin width, and the quantile's error is
      ``|q - np.quantile| <= (max - min) / FLOAT_BINS`` (about 1e-6 of the value range; the 0 and
      1 quantiles are exact). NaNs are not supported.
    """
    dims = _reduce_axes(t, axes)
    if in_memory(t.data) and t.data.size <= IN_MEMORY_QUANTILE_LIMIT:
        values = np.quantile(np.asarray(t.data), list(qs), axis=dims, keepdims=True, method=method)
        return [values[i] for i in range(len(qs))]
    return _streaming_quantiles(t, dims, qs, method)


def _groups(block: np.ndarray, kept: list[int], n_groups: int) -> np.ndarray:
    """``block`` as ``(groups, values)``: the kept (not reduced) axes first, flattened."""
    return np.moveaxis(block, kept, list(range(len(kept)))).reshape(n_groups, -1)


def _min_max(t: Tensor, dims: tuple[int, ...], kept: list[int], n_groups: int):
    lo = np.full(n_groups, np.inf)
    hi = np.full(n_groups, -np.inf)
    for b in _blocks(t, dims):
        g = _groups(b, kept, n_groups)
        if g.shape[1]:
            lo = np.minimum(lo, g.min(axis=1).astype(np.float64))
            hi = np.maximum(hi, g.max(axis=1).astype(np.float64))
    return lo, hi


def _histogram(
    t: Tensor, dims: tuple[int, ...], lo: np.ndarray, bins: int, width: np.ndarray, exact: bool
) -> np.ndarray:
    """Counts ``(groups, bins)`` of the values per group of the kept axes, in bins of ``width`` from
    ``lo`` (``exact``: integers, one bin per value)."""
    shape = tuple(int(n) for n in t.data.shape)
    kept = [d for d in range(len(shape)) if d not in dims]
    n_groups = math.prod(shape[d] for d in kept)
    counts = np.zeros(n_groups * bins, np.int64)
    offsets = (np.arange(n_groups, dtype=np.int64) * bins)[:, None]
    for b in _blocks(t, dims):
        g = _groups(b, kept, n_groups)
        if exact and n_groups == 1 and g.dtype.kind in "bu" and lo[0] == 0:  # the common case, fast
            counts += np.bincount(g.ravel(), minlength=bins)
            continue
        if exact:
            index = g.astype(np.int64) - lo.astype(np.int64)[:, None]
        else:
            index = np.floor((g.astype(np.float64) - lo[:, None]) / width[:, None]).astype(np.int64)
            np.clip(index, 0, bins - 1, out=index)
        counts += np.bincount((index + offsets).ravel(), minlength=n_groups * bins)
    return counts.reshape(n_groups, bins)


def _streaming_quantiles(
    t: Tensor, dims: tuple[int, ...], qs: Sequence[float], method: str
) -> list[np.ndarray]:
    if method not in ("linear", "inverted_cdf"):
        raise ValueError(f"streaming quantiles support the linear and inverted_cdf methods, not {method!r}")
    shape = tuple(int(n) for n in t.data.shape)
    kept = [d for d in range(len(shape)) if d not in dims]
    n_groups = math.prod(shape[d] for d in kept)
    n = math.prod(shape[d] for d in dims)
    if n == 0:
        raise ValueError("quantiles of an empty tensor")
    dtype = np.dtype(t.data.dtype)
    value_bins = _value_bins(dtype)
    if value_bins is not None:
        lo, hi = np.full(n_groups, float(value_bins[0])), None
        bins, width, exact = value_bins[1], np.ones(n_groups), True
    else:
        lo, hi = _min_max(t, dims, kept, n_groups)
        exact = dtype.kind in "iu" and float(np.max(hi - lo)) < EXACT_INT_SPAN
        if exact:
            bins, width = int(np.max(hi - lo)) + 1, np.ones(n_groups)
        else:
            bins = max(2**12, min(FLOAT_BINS, 2**26 // max(n_groups, 1)))
            width = np.where(hi > lo, (hi - lo) / bins, 1.0)
    counts = _histogram(t, dims, lo, bins, width, exact)
    cum = np.cumsum(counts, axis=1)

    def order_statistic(k: np.ndarray) -> np.ndarray:
        """The k-th smallest value (0-based) of each group."""
        b = np.array([np.searchsorted(cum[i], k[i], side="right") for i in range(n_groups)])
        if exact:
            return lo + b
        rows = np.arange(n_groups)
        before = np.where(b > 0, cum[rows, np.maximum(b - 1, 0)], 0)
        inside = (k - before + 0.5) / np.maximum(counts[rows, b], 1)
        value = lo + width * (b + inside)
        value = np.where(k <= 0, lo, value)
        return np.minimum(np.where(k >= n - 1, hi, value), hi)

    # the dtype np.quantile gives for a list of qs (it refuses booleans: float64 for those)
    out_dtype = (
        np.quantile(np.zeros(2, dtype), [0.5], method=method).dtype if dtype.kind != "b" else np.float64
    )
    keep_shape = [shape[d] if d in kept else 1 for d in range(len(shape))]
    results = []
    for q in qs:
        q = float(q)
        if method == "linear":
            h = (n - 1) * q
            j = math.floor(h)
            gamma = h - j
            a = order_statistic(np.full(n_groups, j))
            b = order_statistic(np.full(n_groups, min(j + 1, n - 1)))
            diff = b - a
            value = b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma
        else:  # inverted_cdf, as numpy: index n*q - 1, the next order statistic unless it is whole
            index = n * q - 1
            j = math.floor(index)
            k = j if index - j == 0 else j + 1
            value = order_statistic(np.full(n_groups, min(max(k, 0), n - 1)))
        results.append(np.asarray(value).astype(out_dtype).reshape(keep_shape))
    return results


def _along(values: float | Sequence[float], axis: str | None, axes: tuple[str, ...]) -> np.ndarray | float:
    """A scalar, or a vector shaped to broadcast along ``axis``."""
    if axis is None:
        return values[0] if isinstance(values, (list, tuple)) else values
    shape = [1] * len(axes)
    shape[axes.index(axis)] = -1
    return np.asarray(values, dtype=np.float64).reshape(shape)


def _float(x: np.ndarray) -> type:
    return np.float64 if x.dtype == np.float64 else np.float32


def _affine(x: np.ndarray, gain, offset) -> np.ndarray:
    """``x * gain + offset`` in float32 (float64 stays float64), with the constants cast first."""
    dt = _float(x)
    return (x.astype(dt, copy=False) * np.asarray(gain, dt) + np.asarray(offset, dt)).astype(dt, copy=False)


def _stat_free(op: Op, axes: tuple[str, ...]) -> TileFn:
    kw = op.kwargs
    if op.id == "ensure_dtype":
        dtype = np.dtype(kw["dtype"])
        return lambda x: x.astype(dtype, copy=False)
    if op.id == "sigmoid":
        return lambda x: (1.0 / (1.0 + np.exp(-x.astype(_float(x), copy=False)))).astype(_float(x))
    if op.id == "softmax":
        index = axes.index(kw.get("axis", "channel"))
        return lambda x: _softmax(x.astype(_float(x), copy=False), axis=index).astype(_float(x))
    if op.id == "binarize":
        threshold = _along(kw["threshold"], kw.get("axis"), axes)
        return lambda x: x > threshold
    if op.id == "scale_linear":
        gain = _along(kw.get("gain", 1.0), kw.get("axis"), axes)
        offset = _along(kw.get("offset", 0.0), kw.get("axis"), axes)
        return lambda x: _affine(x, gain, offset)
    if op.id == "fixed_zero_mean_unit_variance":
        mean = np.asarray(_along(kw["mean"], kw.get("axis"), axes), np.float64)
        std = np.asarray(_along(kw["std"], kw.get("axis"), axes), np.float64)
        eps = kw.get("eps", 1e-6)
        return lambda x: _affine(x, 1.0 / (std + eps), -mean / (std + eps))
    if op.id == "clip":
        return lambda x: np.clip(x, kw.get("min"), kw.get("max"))
    raise NotImplementedError(op.id)


def _statistics(op: Op, t: Tensor, refs: Mapping[str, Tensor]) -> Stats:
    """The statistics ``op`` needs, computed on the whole tensor ``t`` (plain numpy arrays)."""
    kw = op.kwargs
    if op.id == "zero_mean_unit_variance":
        return mean_std(t, kw.get("axes"))
    if op.id == "scale_mean_variance":
        ref = _reference(refs, kw["reference_tensor"])
        return (*mean_std(t, kw.get("axes")), *mean_std(ref, kw.get("axes")))
    if op.id == "scale_range":
        ref = _reference(refs, kw["reference_tensor"]) if kw.get("reference_tensor") else t
        qs = [kw.get("min_percentile", 0.0) / 100, kw.get("max_percentile", 100.0) / 100]
        return tuple(quantiles(ref, kw.get("axes"), qs, "linear"))
    if op.id == "clip":
        qs = [kw.get(k) for k in ("min_percentile", "max_percentile")]
        return tuple(quantiles(t, kw.get("axes"), [q / 100 for q in qs if q is not None], "inverted_cdf"))
    raise NotImplementedError(op.id)


def _reference(refs: Mapping[str, Tensor], tensor_id: str) -> Tensor:
    if tensor_id not in refs:
        have = ", ".join(refs) or "none"
        raise ValueError(f"processing refers to the tensor {tensor_id!r}, which is not given (given: {have})")
    return refs[tensor_id]


def _from_stats(op: Op, stats: Stats) -> TileFn:
    kw = op.kwargs
    eps = kw.get("eps", 1e-6)
    if op.id == "zero_mean_unit_variance":
        mean, std = stats
        # (x - mean) / (std + eps), written as one multiply-add in float32 like bioimageio.core
        return lambda x: _normalise(x, mean, std + eps)
    if op.id == "scale_mean_variance":
        mean, std, ref_mean, ref_std = stats
        return lambda x: (
            _normalise(x, mean, std + eps) * (ref_std + eps).astype(np.float32) + ref_mean.astype(np.float32)
        )
    if op.id == "scale_range":
        lower, upper = stats
        return lambda x: _normalise(x, lower, upper - lower + eps)
    if op.id == "clip":
        values = list(stats)
        lo = kw.get("min") if kw.get("min_percentile") is None else values.pop(0)
        hi = kw.get("max") if kw.get("max_percentile") is None else values.pop(0)
        return lambda x: np.clip(x, lo, hi)
    raise NotImplementedError(op.id)


def _normalise(x: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    dt = _float(x)
    return ((x.astype(dt, copy=False) - center.astype(dt)) / scale.astype(dt)).astype(dt, copy=False)


def compose(fns: Sequence[TileFn]) -> TileFn:
    def run(x: np.ndarray) -> np.ndarray:
        for fn in fns:
            x = fn(x)
        return x

    return run


def bind(
    ops: Sequence[Op],
    whole: Tensor,
    refs: Mapping[str, Tensor] | None = None,
    *,
    memo: MutableMapping[str, Stats] | None = None,
) -> TileFn:
    """Fix the statistics of ``ops`` on the whole tensor; the result processes any tile of it.

    Each statistic is computed on ``whole`` as it is given, the tensor entering the ops (in streaming
    passes when it is lazy), as bioimageio.core does; an op after a clip or a scaling sees that
    op's output but statistics of the unprocessed tensor. ``refs`` holds the raw tensors (by id)
    that ops may name as ``reference_tensor``. ``memo`` caches the statistics under
    ``"<op position>:<op id>"`` as plain numpy arrays: those it holds are used as they are (``whole``
    and ``refs`` are then not read at all), those it lacks are computed and stored in it, so the
    chunks of one image can share one pass over it.
    """
    unknown = [op.id for op in ops if op.id not in KNOWN_OPS]
    if unknown:
        raise NotImplementedError(
            f"processing step(s) {', '.join(unknown)} are not part of bioimage.io spec 0.5; "
            "emzoo cannot run them"
        )
    refs = refs or {}
    fns: list[TileFn] = []
    for i, op in enumerate(ops):
        if not needs_stats(op):
            fns.append(_stat_free(op, whole.axes))
            continue
        key = f"{i}:{op.id}"
        stats = memo.get(key) if memo is not None else None
        if stats is None:
            stats = _statistics(op, whole, refs)
            if memo is not None:
                memo[key] = stats
        fns.append(_from_stats(op, stats))
    return compose(fns)


def apply(ops: Sequence[Op], t: Tensor, refs: Mapping[str, Tensor] | None = None) -> np.ndarray:
    """Process a whole tensor."""
    return bind(ops, t, refs)(np.asarray(t.data))


def references(spec, source: Mapping[str, object]) -> dict[str, Tensor]:
    """The raw inputs, by id: what processing steps may name as ``reference_tensor``."""
    return {t.id: Tensor(source[t.id], t.axis_ids) for t in spec.inputs if t.id in source}


def postprocess_whole(t: TensorSpec, data: np.ndarray, bound, refs) -> np.ndarray:
    """Post-process a whole output: with ``bound`` (the ops, their statistics fixed), or with
    statistics taken from all of ``data`` (and the whole reference inputs ``refs``)."""
    if bound is not None:
        return bound(data)
    if not t.processing:
        return data
    return bind(t.processing, Tensor(data, t.axis_ids), refs)(data)
