"""A tensor inside the network, read during a prediction: its channel statistics over regions.

Some checks want what the network computed on an image, not only its outputs: the
out-of-distribution check compares the activations of a U-Net's deepest encoder level with those
of the training images (:mod:`emzoo.tasks.ood.embedding`). Running the network a second time for
them would cost up to half a prediction on an image of one or two tiles. Instead the backend hands
the tensor back as one more output of every block (ONNX: :meth:`OnnxBackend.with_outputs
<emzoo.runtime.backends.onnx.OnnxBackend.with_outputs>` adds it to the graph's outputs), and a
:class:`RegionStatistics` keeps, for each region of the image it was asked about and each cell of
a grid over that region, the sum and the sum of squares of every channel over the tensor's pixels
there: of each block only the part of the image the block owns counts (its halo belongs to its
neighbours), so the statistics are those of the tensor of a whole-image call, tiles or not. Only
statistics are kept, never the tensor: a 128-channel level of a 10k x 10k image would not fit.

A tensor pixel belongs to the image pixel under its centre: at a stride of ``s`` (block pixels per
tensor pixel), tensor pixel ``i`` of a block starting at ``b`` lies over ``b + (i + 0.5) * s``.

>>> stats = RegionStatistics("inner", [(0, 4, 0, 4)], grid=2)
>>> block = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)  # (batch, channel, y, x)
>>> stats.add(block, origin=(0, 0), size=(4, 4), owned=((0, 4), (0, 4)))
>>> stats.cells()[0][:, 0].tolist()  # the mean of each 2 x 2 cell
[2.5, 4.5, 10.5, 12.5]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emzoo.runtime.planning import Plan
from emzoo.runtime.tiling import AxisTiling, Tile

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1) in image pixels, ends excluded


class RegionStatistics:
    """Mean and standard deviation of each channel of the network's tensor ``name`` in each cell
    of a ``grid`` x ``grid`` grid over each of ``boxes`` (y0, y1, x0, x1: image pixels)."""

    def __init__(self, name: str, boxes: Sequence[Box], grid: int = 2):
        self.name, self.boxes, self.grid = name, [tuple(int(v) for v in b) for b in boxes], grid
        self.regions = [_cells(b, grid) for b in self.boxes]
        self.sums: np.ndarray | None = None  # (boxes, cells, 3, channels): count, sum, sum of squares

    def add(
        self,
        block: np.ndarray,
        *,
        origin: tuple[int, int],
        size: tuple[int, int],
        owned: tuple[tuple[int, int], tuple[int, int]],
    ) -> None:
        """One block's tensor ``(1, C, h, w)``: the block starts at image pixel ``origin`` (y, x;
        negative where a border was mirrored in front), is ``size`` pixels, and owns the image
        pixels ``owned`` ((y0, y1), (x0, x1))."""
        a = np.asarray(block)[0]  # float64 only for the pieces read: most blocks lie outside the boxes
        centres = [origin[d] + (np.arange(a.shape[1 + d]) + 0.5) * (size[d] / a.shape[1 + d]) for d in (0, 1)]
        if self.sums is None:
            self.sums = np.zeros((len(self.boxes), self.grid * self.grid, 3, a.shape[0]))
        for b, cells in enumerate(self.regions):
            for c, (y0, y1, x0, x1) in enumerate(cells):
                rows = np.flatnonzero(_inside(centres[0], max(y0, owned[0][0]), min(y1, owned[0][1])))
                cols = np.flatnonzero(_inside(centres[1], max(x0, owned[1][0]), min(x1, owned[1][1])))
                if rows.size and cols.size:
                    piece = a[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].reshape(a.shape[0], -1)
                    piece = piece.astype(np.float64)
                    self.sums[b, c] += [np.full(a.shape[0], piece.shape[1]), piece.sum(1), (piece**2).sum(1)]

    def cells(self) -> list[np.ndarray | None]:
        """Per box, ``(grid * grid, 2 * channels)``: each cell's channel means, then standard
        deviations; None for a box with a cell that no block reached."""
        if self.sums is None:
            return [None] * len(self.boxes)
        found: list[np.ndarray | None] = []
        for box in self.sums:
            n = box[:, 0]
            if (n == 0).any():
                found.append(None)
                continue
            mean = box[:, 1] / n
            std = np.sqrt(np.maximum(box[:, 2] / n - mean**2, 0.0))
            found.append(np.concatenate([mean, std], axis=1))
        return found


def feed_tiles(
    taps: Sequence[RegionStatistics], blocks: Sequence[np.ndarray], plan: Plan, tiles: Sequence[Tile]
) -> None:
    """Give ``taps`` their tensors ``blocks`` (one per tap, batched along the first axis as
    ``tiles``) of one batch of blocks of a tiled run planned as ``plan`` (2D: tiled along y and x)."""
    axes = {g.id: ax for g, ax in zip(plan.grid, plan.axes, strict=True)}
    if set(axes) != {"y", "x"}:
        return
    ky, kx = [g.id for g in plan.grid].index("y"), [g.id for g in plan.grid].index("x")
    ay, ax = axes["y"], axes["x"]
    for tap, batch in zip(taps, blocks, strict=True):
        for i, tile in enumerate(tiles):
            jy, jx = tile.index[ky], tile.index[kx]
            tap.add(
                batch[i : i + 1],
                origin=(ay.starts[jy] - ay.pad_before, ax.starts[jx] - ax.pad_before),
                size=(ay.block, ax.block),
                owned=(owned(ay, jy), owned(ax, jx)),
            )


def feed_whole(
    taps: Sequence[RegionStatistics], blocks: Sequence[np.ndarray], shape: tuple[int, int]
) -> None:
    """Give ``taps`` their tensors ``blocks`` of a whole-image call (the image padded to ``shape``)."""
    for tap, block in zip(taps, blocks, strict=True):
        tap.add(block[:1], origin=(0, 0), size=shape, owned=((0, shape[0]), (0, shape[1])))


def owned(ax: AxisTiling, j: int) -> tuple[int, int]:
    """Block ``j``'s share of the axis in image pixels: the part of the output it owns, an overlap
    with a neighbour (blending) split at its middle, so that the shares partition the axis."""
    lo, hi = ax.owns[j]
    if j > 0:
        lo = (lo + ax.owns[j - 1][1]) // 2
    if j < ax.n_blocks - 1:
        hi = (ax.owns[j + 1][0] + hi) // 2
    return lo - ax.pad_before, hi - ax.pad_before


def _cells(box: Box, grid: int) -> list[Box]:
    y0, y1, x0, x1 = box
    ys = [(int(r[0]), int(r[-1]) + 1) for r in np.array_split(np.arange(y0, y1), grid) if r.size]
    xs = [(int(r[0]), int(r[-1]) + 1) for r in np.array_split(np.arange(x0, x1), grid) if r.size]
    return [(a, b, c, d) for a, b in ys for c, d in xs]


def _inside(centres: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (centres >= lo) & (centres < hi)
