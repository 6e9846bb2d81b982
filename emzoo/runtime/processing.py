"""The bioimage.io spec 0.5 pre- and post-processing operations, on numpy arrays.

Statistics (mean, std, percentiles) are always taken from the whole image, never from a tile:
:func:`bind` computes them once and returns a function that any tile can go through. Following
bioimage.io, an op's ``axes`` are the axes reduced over; ``axes: null`` reduces over all axes. emzoo has
no dataset at prediction time, so "dataset" statistics are those of the image being processed (the
same as bioimageio.core gives for one sample).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import softmax as _softmax

from emzoo.runtime.spec import Op

TileFn = Callable[[np.ndarray], np.ndarray]
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


@dataclass(frozen=True)
class Tensor:
    """An array with its axis ids (in the model's order)."""

    data: np.ndarray
    axes: tuple[str, ...]


def needs_stats(op: Op) -> bool:
    if op.id == "clip":
        return op.kwargs.get("min_percentile") is not None or op.kwargs.get("max_percentile") is not None
    return op.id in STAT_OPS


def _reduce_axes(t: Tensor, axes: Sequence[str] | None) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(t.data.ndim))
    missing = [a for a in axes if a not in t.axes]
    if missing:
        raise ValueError(f"processing refers to axes {missing} that the tensor ({t.axes}) lacks")
    return tuple(t.axes.index(a) for a in axes)


def _chunks(t: Tensor, dims: tuple[int, ...], rows: int = 256):
    """Slices along the longest reduced axis, so that float64 temporaries stay small."""
    if not dims:
        yield (slice(None),) * t.data.ndim
        return
    k = max(dims, key=lambda d: t.data.shape[d])
    for start in range(0, t.data.shape[k], rows):
        index = [slice(None)] * t.data.ndim
        index[k] = slice(start, start + rows)
        yield tuple(index)


def mean_std(t: Tensor, axes: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std over ``axes`` (kept as length-1 dims, so they broadcast).

    Exact, in float64, in two passes over row chunks: works on memory-mapped and lazy arrays
    without loading them whole.
    """
    dims = _reduce_axes(t, axes)
    count = int(np.prod([t.data.shape[d] for d in dims])) if dims else 1
    total = sum(
        np.sum(np.asarray(t.data[c]), axis=dims, keepdims=True, dtype=np.float64) for c in _chunks(t, dims)
    )
    mean = total / count
    squares = sum(
        np.sum(np.square(np.asarray(t.data[c], dtype=np.float64) - mean), axis=dims, keepdims=True)
        for c in _chunks(t, dims)
    )
    return mean, np.sqrt(squares / count)


def quantiles(t: Tensor, axes: Sequence[str] | None, qs: Sequence[float], method: str) -> list[np.ndarray]:
    dims = _reduce_axes(t, axes)
    values = np.quantile(np.asarray(t.data), list(qs), axis=dims, keepdims=True, method=method)
    return [values[i] for i in range(len(qs))]


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


def _with_stats(op: Op, t: Tensor, refs: Mapping[str, Tensor]) -> TileFn:
    kw = op.kwargs
    eps = kw.get("eps", 1e-6)
    if op.id == "zero_mean_unit_variance":
        mean, std = mean_std(t, kw.get("axes"))
        # (x - mean) / (std + eps), written as one multiply-add in float32 like bioimageio.core
        return lambda x: _normalise(x, mean, std + eps)
    if op.id == "scale_mean_variance":
        ref = refs[kw["reference_tensor"]]
        mean, std = mean_std(t, kw.get("axes"))
        ref_mean, ref_std = mean_std(ref, kw.get("axes"))
        return lambda x: (
            _normalise(x, mean, std + eps) * (ref_std + eps).astype(np.float32) + ref_mean.astype(np.float32)
        )
    if op.id == "scale_range":
        ref = refs[kw["reference_tensor"]] if kw.get("reference_tensor") else t
        lower, upper = quantiles(
            ref,
            kw.get("axes"),
            [kw.get("min_percentile", 0.0) / 100, kw.get("max_percentile", 100.0) / 100],
            "linear",
        )
        return lambda x: _normalise(x, lower, upper - lower + eps)
    if op.id == "clip":
        qs = [kw.get("min_percentile"), kw.get("max_percentile")]
        values = quantiles(t, kw.get("axes"), [q / 100 for q in qs if q is not None], "inverted_cdf")
        lo = kw.get("min") if qs[0] is None else values.pop(0)
        hi = kw.get("max") if qs[1] is None else values.pop(0)
        return lambda x: np.clip(x, lo, hi)
    raise NotImplementedError(op.id)


def _normalise(x: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    dt = _float(x)
    return ((x.astype(dt, copy=False) - center.astype(dt)) / scale.astype(dt)).astype(dt, copy=False)


def _transparent_for_stats(op: Op) -> bool:
    """A cast to float changes no statistic (they are computed in float64 anyway)."""
    return op.id == "ensure_dtype" and np.dtype(op.kwargs["dtype"]).kind == "f"


def compose(fns: Sequence[TileFn]) -> TileFn:
    def run(x: np.ndarray) -> np.ndarray:
        for fn in fns:
            x = fn(x)
        return x

    return run


def bind(ops: Sequence[Op], whole: Tensor, refs: Mapping[str, Tensor] | None = None) -> TileFn:
    """Fix the statistics of ``ops`` on the whole tensor; the result processes any tile of it.

    Each statistic is computed on the tensor as the ops before it left it. ``refs`` holds the other
    tensors (by id) that ops may name as ``reference_tensor``.
    """
    unknown = [op.id for op in ops if op.id not in KNOWN_OPS]
    if unknown:
        raise NotImplementedError(
            f"processing step(s) {', '.join(unknown)} are not part of bioimage.io spec 0.5; emzoo cannot run them"
        )
    refs = refs or {}
    last_stat = max((i for i, op in enumerate(ops) if needs_stats(op)), default=-1)
    fns: list[TileFn] = []
    current = whole
    for i, op in enumerate(ops):
        fn = _with_stats(op, current, refs) if needs_stats(op) else _stat_free(op, whole.axes)
        fns.append(fn)
        if i < last_stat and not _transparent_for_stats(op):
            # later statistics need the whole tensor as processed so far
            current = Tensor(fn(np.asarray(current.data)), current.axes)
    return compose(fns)


def apply(ops: Sequence[Op], t: Tensor, refs: Mapping[str, Tensor] | None = None) -> np.ndarray:
    """Process a whole tensor."""
    return bind(ops, t, refs)(np.asarray(t.data))
