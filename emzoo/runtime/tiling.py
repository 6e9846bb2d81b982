"""Tiling and stitching as pure functions over small records (testable without a model).

Conventions (documented in docs/tiling.md):

* A *block* is what goes into the model (tile plus halo); all blocks of an image have one shape,
  so they can be batched. Block starts are multiples of the model's alignment (its down-sampling
  step), so pooling windows line up with those of a whole-image call.
* The model sees the image border as in one whole-image call: the network's own padding. Only when
  the image is not a size the model accepts is it extended, at the far end, by mirroring
  (``symmetric``), and the output cropped back. Outputs have the size the package declares, as in
  bioimageio.core: an output smaller than its input (negative size offset) lacks ``-offset / 2``
  px on each side (``plan_axis(pad_before=...)`` can mirror a border in front for a full-size one).
* Each block *owns* the part of the output that lies at least ``halo`` away from its interior
  edges. Without blending the owned parts partition the image (crop-and-paste, exact when the halo
  covers the receptive field). With blending, neighbours overlap by ``2 * blend`` and are mixed
  with linear ramps, which hides seams where the halo cannot cover the receptive field.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from emzoo.package.spec import SizeRule

CALL_OVERHEAD_PX = 64  # per-block cost of a model call, in pixels along one axis


@dataclass(frozen=True)
class AxisTiling:
    """How one input axis is cut into blocks. Coordinates are in the *extended* axis, i.e. the
    image shifted by ``pad_before`` (mirrored border for models that crop their output)."""

    length: int  # image length
    pad_before: int
    pad_after: int
    block: int
    halo: int
    blend: int
    starts: tuple[int, ...]
    owns: tuple[tuple[int, int], ...]  # output regions (extended input coordinates) per block

    @property
    def extended(self) -> int:
        return self.pad_before + self.length + self.pad_after

    @property
    def n_blocks(self) -> int:
        return len(self.starts)


def extended_length(length: int, block: int, align: int, pad_before: int = 0) -> int:
    """The length blocks of size ``block`` tile with aligned starts (>= image + both pads)."""
    need = length + 2 * pad_before
    if need <= block:
        return block
    return block + align * math.ceil((need - block) / align)


def plan_axis(
    length: int, block: int, halo: int, *, align: int = 1, blend: int = 0, pad_before: int = 0
) -> AxisTiling:
    """Cut an axis of ``length`` pixels into blocks of ``block`` pixels.

    Consecutive blocks are ``block - 2 * (halo + blend)`` apart (rounded down to ``align``); the last
    block is shifted back to end at the extended end.
    """
    total = extended_length(length, block, align, pad_before)
    stride = (block - 2 * (halo + blend)) // align * align
    if total > block and stride <= 0:
        raise ValueError(
            f"a block of {block} px cannot hold a halo of {halo} px and a blend of {blend} px on both "
            f"sides (aligned to {align}); use a larger tile or a smaller halo"
        )
    starts = [0]
    while starts[-1] + block < total:
        starts.append(min(starts[-1] + stride, total - block))
    owns = []
    for j, s in enumerate(starts):
        lo = 0 if j == 0 else s + halo
        hi = total if j == len(starts) - 1 else s + block - halo
        owns.append((lo, hi))
    if blend == 0:  # crop-and-paste: hand each overlap to the block that starts later
        owns = [(lo if j == 0 else owns[j - 1][1], hi) for j, (lo, hi) in enumerate(owns)]
    return AxisTiling(
        length=length,
        pad_before=pad_before,
        pad_after=total - length - pad_before,
        block=block,
        halo=halo,
        blend=blend,
        starts=tuple(starts),
        owns=tuple(owns),
    )


def choose_block(
    length: int,
    rule: SizeRule,
    halo: int,
    *,
    align: int,
    max_block: int,
    blend: int = 0,
    pad_before: int = 0,
) -> int:
    """The accepted block size <= ``max_block`` that needs the least compute for this axis.

    Cost = number of blocks x (block + call overhead); a single block holding the whole axis wins
    when it fits.
    """
    if rule.fixed is not None:
        return rule.fixed
    whole = rule.valid(length + 2 * pad_before)
    if whole <= max_block:
        return whole
    lo = 2 * (halo + blend) + align
    options = [n for n in rule.candidates(lo, max_block) if n <= max(max_block, rule.valid(lo))]
    best, best_cost = None, math.inf
    for n in options:
        total = extended_length(length, n, align, pad_before)
        stride = (n - 2 * (halo + blend)) // align * align
        if stride <= 0:
            continue
        count = 1 + math.ceil(max(total - n, 0) / stride)
        cost = count * (n + CALL_OVERHEAD_PX)
        if cost < best_cost:
            best, best_cost = n, cost
    if best is None:
        raise ValueError(f"no accepted block size up to {max_block} px leaves room for a {halo} px halo")
    return best


@dataclass(frozen=True)
class OutputAxisMap:
    """How an output axis follows an input axis: ``out = ratio * in + offset`` pixels."""

    ratio: float = 1.0
    offset: int = 0

    def length(self, ax: AxisTiling) -> int:
        """Output length for the (unextended) image."""
        return _exact(self.ratio * (ax.length + 2 * ax.pad_before) + self.offset, "output length")

    def block_length(self, ax: AxisTiling) -> int:
        return _exact(self.ratio * ax.block + self.offset, "block output length")

    def regions(self, ax: AxisTiling, j: int) -> tuple[slice, slice]:
        """``(slice in block output, slice in image output)`` of block ``j``'s owned region.

        The image output is the model's output for the extended image, as declared: block output
        index ``i`` is image output index ``ratio * start + i``, and the output pixel over extended
        input coordinate ``x`` is ``ratio * x + offset / 2`` (an output smaller than its input,
        ``offset < 0``, starts ``-offset / 2`` px inside it)."""
        lo, hi = ax.owns[j]
        start = ax.starts[j]
        half = self.offset / 2
        g_lo = max(_exact(self.ratio * lo + half, "tile boundary"), 0)
        g_hi = min(_exact(self.ratio * hi + half, "tile boundary"), self.length(ax))
        origin = _exact(self.ratio * start, "tile origin")
        return slice(g_lo - origin, g_hi - origin), slice(g_lo, g_hi)


def _exact(value: float, what: str) -> int:
    r = round(value)
    if abs(value - r) > 1e-6:
        raise ValueError(f"{what} {value} is not a whole number of pixels; tile with another alignment")
    return int(r)


def blend_weights(ax: AxisTiling, j: int, amap: OutputAxisMap | None = None) -> np.ndarray:
    """Weights over block ``j``'s owned output region: linear ramps across the overlaps with its
    neighbours (which sum to one there), 1 elsewhere."""
    amap = amap or OutputAxisMap()
    own = amap.regions(ax, j)[1]
    lo, hi = own.start, own.stop
    w = np.ones(hi - lo, dtype=np.float32)
    if j > 0:
        overlap = min(amap.regions(ax, j - 1)[1].stop, hi) - lo
        if overlap > 0:
            w[:overlap] = np.minimum(w[:overlap], (np.arange(overlap) + 0.5) / overlap)
    if j < ax.n_blocks - 1:
        overlap = hi - max(amap.regions(ax, j + 1)[1].start, lo)
        if overlap > 0:
            w[-overlap:] = np.minimum(w[-overlap:], (np.arange(overlap)[::-1] + 0.5) / overlap)
    return w


@dataclass(frozen=True)
class Tile:
    index: tuple[int, ...]
    starts: tuple[int, ...]  # block start per axis (extended coordinates)


def iter_tiles(axes: Sequence[AxisTiling]) -> Iterator[Tile]:
    for index in itertools.product(*(range(a.n_blocks) for a in axes)):
        yield Tile(index, tuple(a.starts[j] for a, j in zip(axes, index, strict=True)))


class Stitcher:
    """Assembles one output tensor from its blocks' outputs.

    Without blending each block's owned region is pasted (through ``post``, e.g. a sigmoid, when
    given); with blending the raw outputs are mixed with :func:`blend_weights` and normalised by
    their sum in :meth:`result`.
    """

    def __init__(
        self,
        axes: Sequence[AxisTiling],
        dims: Sequence[int],
        maps: Sequence[OutputAxisMap] | None = None,
        *,
        post=None,
    ):
        self.axes, self.dims = tuple(axes), tuple(dims)
        self.maps = tuple(maps) if maps is not None else tuple(OutputAxisMap() for _ in axes)
        self.blending = any(a.blend > 0 for a in self.axes)
        self.post = None if self.blending else post
        self.data: np.ndarray | None = None
        self.weights: np.ndarray | None = None

    def _allocate(self, block: np.ndarray, piece: np.ndarray) -> None:
        shape = list(block.shape)
        for ax, amap, dim in zip(self.axes, self.maps, self.dims, strict=True):
            shape[dim] = amap.length(ax)
        dtype = np.result_type(piece.dtype, np.float32) if self.blending else piece.dtype
        self.data = np.zeros(shape, dtype=dtype)
        if self.blending:
            self.weights = np.zeros(
                [shape[d] if d in self.dims else 1 for d in range(len(shape))], np.float32
            )

    def add(self, tile: Tile, block: np.ndarray) -> None:
        src = [slice(None)] * block.ndim
        dst = [slice(None)] * block.ndim
        for k, (ax, amap, dim) in enumerate(zip(self.axes, self.maps, self.dims, strict=True)):
            src[dim], dst[dim] = amap.regions(ax, tile.index[k])
        piece = block[tuple(src)]
        if self.post is not None:
            piece = self.post(piece)
        if self.data is None:
            self._allocate(block, piece)
        if not self.blending:
            self.data[tuple(dst)] = piece
            return
        w = np.ones([1] * block.ndim, np.float32)
        for k, (ax, amap, dim) in enumerate(zip(self.axes, self.maps, self.dims, strict=True)):
            shape = [1] * block.ndim
            shape[dim] = -1
            w = w * blend_weights(ax, tile.index[k], amap).reshape(shape)
        self.data[tuple(dst)] += piece * w
        self.weights[tuple(dst)] += w

    def result(self) -> np.ndarray:
        if self.data is None:
            raise ValueError("no block was added")
        if self.blending:
            self.data /= self.weights
        return self.data


def read_block(image, axes: Sequence[AxisTiling], tile: Tile, dims: Sequence[int]) -> np.ndarray:
    """The block of ``image`` for ``tile``, mirrored where it reaches past the image.

    ``image`` may be lazy (memmap, zarr, :class:`~emzoo.runtime.layout.LayoutView`); ``dims`` are
    its dimensions that the tiling axes cut, the others are taken whole.
    """
    index: list = [slice(None)] * len(image.shape)
    pads = [(0, 0)] * len(image.shape)
    for ax, start, dim in zip(axes, tile.starts, dims, strict=True):
        a = start - ax.pad_before
        b = a + ax.block
        lo, hi = max(a, 0), min(b, ax.length)
        index[dim] = slice(lo, hi)
        pads[dim] = (lo - a, b - hi)
    block = np.asarray(image[tuple(index)])
    if any(p != (0, 0) for p in pads):
        block = mirror_pad(block, pads)
    return block


def mirror_pad(block: np.ndarray, pads: list[tuple[int, int]]) -> np.ndarray:
    """``symmetric`` padding that also works when the pad is larger than the data (repeats it)."""
    for dim, (before, after) in enumerate(pads):
        while before or after:
            n = block.shape[dim]
            b, a = min(before, n), min(after, n)
            width = [(0, 0)] * block.ndim
            width[dim] = (b, a)
            block = np.pad(block, width, mode="symmetric")
            before, after = before - b, after - a
    return block
