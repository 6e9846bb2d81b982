"""The spec's post-processing formulas in plain numpy, for the few ops bioimageio.core 0.11 cannot run
(statistics of an output, per-axis binarize thresholds): the reference for those packages is
bioimageio.core's network output followed by these formulas. Independent of emzoo's implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _dims(axes: Sequence[str], reduce: Sequence[str] | None) -> tuple[int, ...]:
    return tuple(range(len(axes))) if reduce is None else tuple(axes.index(a) for a in reduce)


def _along(values, axis: str | None, axes: Sequence[str]):
    if axis is None:
        return np.float64(values[0] if isinstance(values, list) else values)
    shape = [1] * len(axes)
    shape[axes.index(axis)] = -1
    return np.asarray(values, np.float64).reshape(shape)


def _mean_std(x: np.ndarray, dims) -> tuple[np.ndarray, np.ndarray]:
    x = x.astype(np.float64)
    return x.mean(axis=dims, keepdims=True), x.std(axis=dims, keepdims=True)


def apply_ops(
    ops: Sequence[dict],
    x: np.ndarray,
    axes: Sequence[str],
    raw: Mapping[str, tuple[np.ndarray, Sequence[str]]],
) -> np.ndarray:
    """Apply spec-0.5 ops (``{"id", "kwargs"}``) to ``x``; ``raw`` holds the unprocessed inputs that
    ops may name as ``reference_tensor`` (with their axes). Statistics are those of ``x`` as given
    (the rule bioimageio.core follows for its inputs), not as earlier ops left it."""
    entry = x
    for op in ops:
        kw = op.get("kwargs") or {}
        name = op["id"]
        if name == "sigmoid":
            x = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
        elif name == "binarize":
            x = x > _along(kw["threshold"], kw.get("axis"), axes)
        elif name == "ensure_dtype":
            x = x.astype(kw["dtype"])
        elif name == "clip":  # percentiles as bioimageio.core takes them for clip: inverted_cdf
            dims = _dims(axes, kw.get("axes"))
            lo, hi = kw.get("min"), kw.get("max")
            if kw.get("min_percentile") is not None:
                lo = np.quantile(
                    entry, kw["min_percentile"] / 100, axis=dims, keepdims=True, method="inverted_cdf"
                )
            if kw.get("max_percentile") is not None:
                hi = np.quantile(
                    entry, kw["max_percentile"] / 100, axis=dims, keepdims=True, method="inverted_cdf"
                )
            x = np.clip(x, lo, hi)
        elif name == "scale_linear":
            x = x * _along(kw.get("gain", 1.0), kw.get("axis"), axes) + _along(
                kw.get("offset", 0.0), kw.get("axis"), axes
            )
        elif name == "zero_mean_unit_variance":
            mean, std = _mean_std(entry, _dims(axes, kw.get("axes")))
            x = (x - mean) / (std + kw.get("eps", 1e-6))
        elif name == "scale_mean_variance":
            ref, ref_axes = raw[kw["reference_tensor"]]
            eps = kw.get("eps", 1e-6)
            mean, std = _mean_std(entry, _dims(axes, kw.get("axes")))
            ref_mean, ref_std = _mean_std(ref, _dims(ref_axes, kw.get("axes")))
            x = (x - mean) / (std + eps) * (ref_std + eps) + ref_mean
        elif name == "scale_range":
            source, source_axes = raw[kw["reference_tensor"]] if kw.get("reference_tensor") else (entry, axes)
            dims = _dims(source_axes, kw.get("axes"))
            lo = np.quantile(source, kw.get("min_percentile", 0.0) / 100, axis=dims, keepdims=True)
            hi = np.quantile(source, kw.get("max_percentile", 100.0) / 100, axis=dims, keepdims=True)
            x = (x - lo) / (hi - lo + kw.get("eps", 1e-6))
        else:
            raise NotImplementedError(name)
    return x
