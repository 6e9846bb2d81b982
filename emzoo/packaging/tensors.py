"""The tensors of a package: the sample in the input's axes, the test crop, output checks, statistics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.package.spec import Tolerance
from emzoo.packaging.export import PackagingError
from emzoo.packaging.geometry import Geometry
from emzoo.packaging.info import PackagingInfo, TensorInfo


def intensity_stats(
    images: Iterable[np.ndarray],
    *,
    source: str,
    max_pixels: int = 1_000_000,
    groups: Sequence[str | None] | None = None,
) -> dict:
    """Mean, std, 1st/99th percentiles of raw images (exact mean/std; percentiles of an evenly
    spaced subsample of at most ``max_pixels`` per image). ``groups`` names each image's kind of
    contrast (None: no kind); with two kinds or more, each kind's statistics are added as ``groups``,
    since pooled statistics of two contrasts describe neither."""
    images = list(images)
    kinds: dict[str, list[np.ndarray]] = {}
    for image, kind in zip(images, groups or [None] * len(images), strict=True):
        if kind is not None:
            kinds.setdefault(kind, []).append(image)
    stats = _pooled(images, source, max_pixels)
    if len(kinds) > 1:
        stats["groups"] = {
            k: _pooled(imgs, f"the {len(imgs)} {k.replace('_', ' ')} training images", max_pixels)
            for k, imgs in sorted(kinds.items())
        }
    return stats


def _pooled(images: Sequence[np.ndarray], source: str, max_pixels: int) -> dict:
    total = 0.0
    squares = 0.0
    count = 0
    picks = []
    dtype = None
    n = 0
    for image in images:
        arr = np.asarray(image)
        dtype = dtype or str(arr.dtype)
        flat = arr.reshape(-1).astype(np.float64)
        total += float(flat.sum())
        squares += float(np.square(flat).sum())
        count += flat.size
        stride = max(1, flat.size // max_pixels)
        picks.append(flat[::stride])
        n += 1
    if count == 0:
        raise PackagingError("no training images to compute intensity statistics from")
    mean = total / count
    std = float(np.sqrt(max(squares / count - mean * mean, 0.0)))
    p1, p99 = np.percentile(np.concatenate(picks), [1, 99])
    return {
        "mean": round(mean, 6),
        "std": round(std, 6),
        "p1": float(p1),
        "p99": float(p99),
        "dtype": dtype,
        "n_images": n,
        "source": source,
    }


def sample_in_input_axes(sample: np.ndarray, t: TensorInfo) -> np.ndarray:
    """The sample with exactly the input's axes (a missing length-1 channel axis is added)."""
    arr = np.asarray(sample)
    want = len(t.axes)
    n_channels = len(t.channel_names)
    if arr.ndim == want - 1 and "c" in t.axes and n_channels == 1:
        arr = np.expand_dims(arr, t.axes.index("c"))
    if arr.ndim != want:
        raise PackagingError(
            f"the sample image has shape {arr.shape} ({arr.ndim}D), but input {t.id!r} has axes "
            f"{t.axes!r} ({want}D): give one image in the input's axis order"
        )
    if "c" in t.axes and arr.shape[t.axes.index("c")] != n_channels:
        raise PackagingError(
            f"the sample image has {arr.shape[t.axes.index('c')]} channel(s) (shape {arr.shape}, axes "
            f"{t.axes!r}), but input {t.id!r} declares {n_channels} ({', '.join(t.channel_names)}); "
            "give a sample with those channels or fix channel_names"
        )
    return arr


def crop_for_test(arr: np.ndarray, t: TensorInfo, geometry: Geometry, test_size: int) -> np.ndarray:
    """A centred crop of a size the network accepts, at most ``test_size`` px per spatial axis."""
    if test_size < geometry.min_size:
        raise PackagingError(
            f"test_size={test_size} is below the smallest input the network accepts "
            f"({geometry.min_size} px): use test_size >= {geometry.min_size}"
        )
    index: list[slice] = []
    for dim, a in enumerate(t.axes):
        if a not in "zyx":
            index.append(slice(None))
            continue
        length = arr.shape[dim]
        if length < geometry.min_size:
            raise PackagingError(
                f"the sample image is {length} px along {a}, but the network needs at least "
                f"{geometry.min_size} px (2 x halo {geometry.halo} + step {geometry.step}): give a larger "
                "sample"
            )
        n = geometry.valid(min(test_size, length))
        start = (length - n) // 2
        index.append(slice(start, start + n))
    return arr[tuple(index)]


def output_atol(test_output: np.ndarray, tol: Tolerance) -> float:
    """bioimageio.spec requires atol <= 1% of the test output's maximum; a margin below that limit
    keeps float noise between this output and the one the spec checks from tipping it over."""
    top = float(np.max(test_output))
    return min(tol.atol, 0.0099 * top) if top > 0 else 0.0


def check_output_shapes(outs: Sequence[np.ndarray], info: PackagingInfo, x: np.ndarray) -> None:
    if len(outs) < len(info.outputs):
        raise PackagingError(
            f"the network returns {len(outs)} tensor(s) but PackagingInfo.outputs describes "
            f"{len(info.outputs)}"
        )
    spatial_in = {a: x.shape[1 + i] for i, a in enumerate(info.inputs[0].axes) if a in "zyx"}
    for o, t in zip(outs, info.outputs, strict=False):
        problem = None
        if o.ndim != len(t.axes) + 1:
            problem = f"{o.ndim} dims, but axes {t.axes!r} (+ batch) mean {len(t.axes) + 1}"
        elif o.shape[1 + t.axes.index("c")] != len(t.channel_names):
            problem = f"{o.shape[1 + t.axes.index('c')]} channels, but {len(t.channel_names)} channel_names"
        else:
            for i, a in enumerate(t.axes):
                if a in spatial_in and o.shape[1 + i] != spatial_in[a]:
                    problem = f"{o.shape[1 + i]} px along {a} for {spatial_in[a]} px of input"
        if problem:
            raise PackagingError(
                f"output {t.id!r} of the network has shape {o.shape} for input {x.shape}: {problem}; fix "
                "PackagingInfo.outputs (emzoo packages image outputs of the input's size, or one value "
                "per image)"
            )


def squeezed(arr: np.ndarray) -> np.ndarray:
    """Length-1 axes dropped (a 2D TIFF for a one-channel image), at least 2D for TIFF writers."""
    out = np.squeeze(arr)
    return out.reshape(1, -1) if out.ndim < 2 else out


def jsonable(value: Any) -> Any:
    """Plain YAML/JSON types (numpy scalars and arrays, paths and tuples converted)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
