"""Tiling plans as pure functions: which axes are cut, and the block, halo, blend and batch per axis.

:func:`tile_grid` reads the shared tiled axes off the model description and the input shapes;
:func:`plan_tiles` turns them into a :class:`Plan` from the user's :class:`TileSettings`, the device
and the model's measured receptive field. Nothing here runs a model: the predictor measures the
receptive field (only when :func:`needs_receptive_field` says so) and passes it in.

>>> from emzoo.package.spec import SizeRule
>>> rule = SizeRule(min=64, step=16)
>>> grid = (GridAxis("y", 300, rule, (1,)), GridAxis("x", 300, rule, (2,)))
>>> outputs = {"prob": OutputPlan(dims=(1, 2), maps=(OutputAxisMap(), OutputAxisMap()), halos=(0, 0))}
>>> plan = plan_tiles(grid, outputs, TileSettings(), device="cpu", receptive_field=None)
>>> plan.n_tiles, [a.block for a in plan.axes]
(1, [304, 304])
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from emzoo.errors import InputError, UsageError
from emzoo.package.spec import Axis, ModelSpec, SizeRule, TensorSpec
from emzoo.runtime.batching import BatchFor, plan_batch
from emzoo.runtime.settings import TileSettings
from emzoo.runtime.tiling import AxisTiling, OutputAxisMap, choose_block, plan_axis

log = logging.getLogger(__name__)

# largest block edge chosen automatically: 512-1024 px tiles beat whole-image calls on CPU; for the
# membrane U-Net on 4096² (2 cores) 768 px took 7.6 s / 0.43 GB peak RSS, 1024 px 8.3 s / 0.62 GB,
# 512 px 9.2 s / 0.38 GB
MAX_BLOCK = {("cpu", 2): 768, ("cpu", 3): 128, ("cuda", 2): 2048, ("cuda", 3): 256}
RF_MARGIN = 2  # pixels of halo beyond the measured receptive field


@dataclass(frozen=True)
class GridAxis:
    """An axis that all inputs share and that is cut into blocks."""

    id: str
    length: int
    rule: SizeRule
    input_dims: tuple[int, ...]  # its position in each input


@dataclass(frozen=True)
class OutputPlan:
    dims: tuple[int, ...]  # the output dim of each grid axis
    maps: tuple[OutputAxisMap, ...]
    halos: tuple[int, ...]  # declared halo, in output pixels


@dataclass(frozen=True)
class Plan:
    """Everything decided before the first block runs (shown by ``emzoo predict --verbose``)."""

    grid: tuple[GridAxis, ...]
    axes: tuple[AxisTiling, ...]
    outputs: dict[str, OutputPlan]
    receptive_field: tuple[int | None, ...]
    batch_size: int
    aligns: tuple[int, ...] = ()  # block starts are multiples of these (pooling + output scale)

    @property
    def n_tiles(self) -> int:
        return math.prod(a.n_blocks for a in self.axes)


def axis_rule(spec: ModelSpec, tensor: TensorSpec, axis: Axis) -> SizeRule:
    """The sizes ``axis`` of ``tensor`` accepts, following size references to the input they name."""
    if axis.ref is not None:
        try:
            ref_tensor = spec.input(axis.ref.tensor)
        except KeyError:
            return SizeRule(min=1, step=1)
        return axis_rule(spec, ref_tensor, ref_tensor.axis(axis.ref.axis))
    return axis.rule


def tile_grid(
    spec: ModelSpec, shapes: Mapping[str, tuple[int, ...]]
) -> tuple[tuple[GridAxis, ...], dict[str, OutputPlan]] | None:
    """The shared tiled axes of the inputs (``shapes``: input id -> shape in the model's axis order)
    and how each output follows them; None if the model cannot be tiled."""
    first = spec.inputs[0]
    shape0 = shapes[first.id]
    grid = []
    for axis in first.spatial_axes:
        dims, length = [], shape0[first.axis_ids.index(axis.id)]
        for t in spec.inputs:
            if t.id not in shapes:
                continue
            if axis.id not in t.axis_ids or shapes[t.id][t.axis_ids.index(axis.id)] != length:
                return None
            dims.append(t.axis_ids.index(axis.id))
        grid.append(GridAxis(axis.id, int(length), axis_rule(spec, first, axis), tuple(dims)))
    ids = [g.id for g in grid]
    outputs = {}
    for t in spec.outputs:
        dims, maps, halos = [None] * len(grid), [None] * len(grid), [0] * len(grid)
        for d, axis in enumerate(t.axes):
            if axis.is_spatial and axis.ref is not None:
                if axis.ref.axis not in ids or axis.ref.tensor not in shapes:
                    return None
                k = ids.index(axis.ref.axis)
                if dims[k] is not None:  # two output axes follow one tiled axis
                    return None
                ref_axis = spec.tensor(axis.ref.tensor).axis(axis.ref.axis)
                dims[k] = d
                maps[k] = OutputAxisMap(ref_axis.scale / axis.scale, axis.ref.offset)
                halos[k] = axis.halo
            elif not _passes_through(axis, ids):
                return None
        if None in dims:
            return None
        outputs[t.id] = OutputPlan(tuple(dims), tuple(maps), tuple(halos))
    return tuple(grid), outputs


def _passes_through(axis: Axis, grid_ids: Sequence[str]) -> bool:
    """An output axis that blocks leave whole: batch, channels, and fixed-size index or space axes
    the tiled axes do not name (e.g. a singleton ``z`` of a 2D network's output)."""
    if axis.type in ("batch", "channel"):
        return True
    return axis.size is not None and not (axis.is_spatial and axis.id in grid_ids)


def _ceil_div(a: float, b: float) -> int:
    return math.ceil(a / b - 1e-9)


def _fraction_step(ratio: float) -> float:
    """The smallest input step that maps to a whole number of output pixels (for ratios like 1/2)."""
    for k in range(1, 65):
        if abs(ratio * k - round(ratio * k)) < 1e-9:
            return 1 / k
    raise InputError(f"output scale ratio {ratio} cannot be tiled")


@dataclass(frozen=True)
class _Needs:
    """What the outputs need per grid axis: mirrored border, declared halo, alignment."""

    pads: list[int]
    declared: list[int]
    aligns: list[int]
    scale_aligns: list[int]  # the part of ``aligns`` the output scales need (never relaxed)


def _needs(grid: Sequence[GridAxis], outputs: Mapping[str, OutputPlan]) -> _Needs:
    pads, declared, aligns, scale_aligns = [], [], [], []
    for k, g in enumerate(grid):
        ms = [o.maps[k] for o in outputs.values()]
        hs = [o.halos[k] for o in outputs.values()]
        pads.append(0)  # outputs keep their declared size: no mirrored border in front (tiling.py)
        declared.append(
            max(
                (_ceil_div(h + max(0, -m.offset) / 2, m.ratio) for m, h in zip(ms, hs, strict=True)),
                default=0,
            )
        )
        scale_align = 1
        for m in ms:  # block starts must map to whole output pixels
            scale_align = math.lcm(scale_align, _ceil_div(1, _fraction_step(m.ratio)))
        aligns.append(math.lcm(g.rule.natural_alignment(), scale_align))
        scale_aligns.append(scale_align)
    return _Needs(pads, declared, aligns, scale_aligns)


def _relaxed_alignment(align: int, floor: int, room: int) -> int:
    """The block-start alignment for a block with ``room`` px of stride: the pooling part of
    ``align`` (a guess for fixed-size inputs: the largest power of two of the size) is halved until a
    stride fits; ``floor`` (what the output scales need) stays."""
    while room < align and align % 2 == 0 and (align // 2) % floor == 0:
        align //= 2
    return align


def _max_block(device: str, ndim: int) -> int:
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return MAX_BLOCK.get((kind, ndim), MAX_BLOCK[(kind, 2)] if ndim < 2 else 96)


def accepted_tile(axis: GridAxis, n: int) -> int:
    """``n`` if the model takes blocks of ``n`` px along ``axis``, else a usage error naming ``tile``."""
    if axis.rule.accepts(n):
        return n
    if axis.rule.fixed is not None:
        raise UsageError(f"{{tile}} {n}: this model takes exactly {axis.rule.fixed} px along {axis.id}")
    raise UsageError(
        f"{{tile}} {n}: the model takes {axis.rule.min}+{axis.rule.step}k px along {axis.id}; "
        f"use {axis.rule.valid(n)}"
    )


def _blocks(
    grid: Sequence[GridAxis],
    settings: TileSettings,
    halos: Sequence[int],
    blends: Sequence[int],
    needs: _Needs,
    max_block: int,
) -> list[int]:
    ndim = len(grid)
    if settings.tile is not None:
        sizes = list(settings.tile) * (ndim if len(settings.tile) == 1 else 1)
        return [accepted_tile(g, n) for g, n in zip(grid, sizes, strict=True)]
    return [
        choose_block(g.length, g.rule, h, align=a, max_block=max_block, blend=b, pad_before=p)
        for g, h, a, b, p in zip(grid, halos, needs.aligns, blends, needs.pads, strict=True)
    ]


def _check_settings(grid: Sequence[GridAxis], settings: TileSettings) -> None:
    ndim = len(grid)
    if settings.tile is not None and len(settings.tile) not in (1, ndim):
        raise UsageError(f"{{tile}} takes 1 or {ndim} sizes for this model, got {len(settings.tile)}")


def needs_receptive_field(
    grid: Sequence[GridAxis], outputs: Mapping[str, OutputPlan], settings: TileSettings, *, device: str
) -> bool:
    """Does :func:`plan_tiles` need the measured receptive field? Only when the image takes more than
    one block and the user left the halo or the blend to emzoo."""
    _check_settings(grid, settings)
    if settings.halo is not None and settings.blend is not None:
        return False
    needs = _needs(grid, outputs)
    base = _blocks(grid, settings, needs.declared, [0] * len(grid), needs, _max_block(device, len(grid)))
    return not all(g.length + 2 * p <= n for g, n, p in zip(grid, base, needs.pads, strict=True))


def plan_tiles(
    grid: tuple[GridAxis, ...],
    outputs: dict[str, OutputPlan],
    settings: TileSettings,
    *,
    device: str,
    receptive_field: Sequence[int | None] | None,
    batchable: bool = True,
    batch_for: BatchFor | None = None,
) -> Plan:
    """Block size, halo and blending per axis for an image of ``grid``.

    ``receptive_field``: the measured radius per grid axis (None entries: unknown or global), or None
    when it was not measured (see :func:`needs_receptive_field`). ``batchable``: the model's batch
    axis takes more than one block. ``batch_for``: on CUDA, the batch that fits the free memory for
    blocks of a size (see :func:`emzoo.runtime.batching.plan_batch`); the batch otherwise.
    """
    _check_settings(grid, settings)
    s = settings
    ndim = len(grid)
    max_block = _max_block(device, ndim)
    needs = _needs(grid, outputs)
    pads, declared, aligns = needs.pads, needs.declared, needs.aligns
    zero = [0] * ndim
    base = _blocks(grid, s, declared, zero, needs, max_block)
    single = all(g.length + 2 * p <= n for g, n, p in zip(grid, base, pads, strict=True))
    rf: list[int | None] = [None] * ndim
    if not single and (s.halo is None or s.blend is None) and receptive_field is not None:
        rf = list(receptive_field)
    want = [
        max(s.halo, p) if s.halo is not None else d if r is None else max(d, r + RF_MARGIN + p)
        for d, r, p in zip(declared, rf, pads, strict=True)
    ]
    sizes = base if single else _blocks(grid, s, want, zero, needs, max_block)
    halos, blends = [], []
    for k in range(ndim):
        n, a = sizes[k], aligns[k]
        h = declared[k] if single else want[k]
        if not single and s.halo is None:  # keep at least half of a fixed/given block as stride
            h = min(h, max(declared[k], (n - max(n // 2, a)) // 2))
        if not single and grid[k].rule.fixed is not None:
            a = aligns[k] = _relaxed_alignment(a, needs.scale_aligns[k], n - 2 * h)
        room = max(0, (n - 2 * h - a) // 2)  # blend that still leaves one alignment step of stride
        if single:
            b = 0
        elif s.blend is not None:
            b = s.blend
        elif rf[k] is None:
            b = min(room, n // 8)  # unknown or global receptive field: feather the seams
        else:
            b = max(0, min(rf[k] + pads[k] - h, room))
        halos.append(h)
        blends.append(b)
    if any(blends) and s.tile is None and not single:
        sizes = _blocks(grid, s, halos, blends, needs, max_block)
    try:
        axes = tuple(
            plan_axis(g.length, n, h, align=a, blend=b, pad_before=p)
            for g, n, h, a, b, p in zip(grid, sizes, halos, aligns, blends, pads, strict=True)
        )
    except ValueError as e:
        raise UsageError(f"cannot tile this image: {e}") from None
    if any(blends) and s.blend is None:
        _warn_blended(tuple(sizes), tuple(rf), tuple(blends))
    batch = plan_batch(
        s.batch_size,
        device=device,
        batchable=batchable,
        blocks=[a.block for a in axes],
        n_blocks=math.prod(a.n_blocks for a in axes),
        batch_for=batch_for,
    )
    plan = Plan(grid, axes, outputs, tuple(rf), batch, tuple(aligns))
    log.info(
        "tiling: %d blocks of %s px (image %s), halo %s, blend %s, receptive field %s, batch %d",
        plan.n_tiles,
        [a.block for a in axes],
        [g.length for g in grid],
        halos,
        blends,
        rf,
        batch,
    )
    return plan


@functools.lru_cache(maxsize=8)  # once per layout, as emzoo.tasks.ood says its note once
def _warn_blended(sizes: tuple, rf: tuple, blends: tuple) -> None:
    """Say once per process and layout (not once per image of a folder) that tiles are blended."""
    field = "an unknown receptive field" if None in rf else f"the receptive field ({list(rf)} px)"
    log.warning(
        "blocks of %s px cannot hold %s with a halo: tiles are blended over %s px, so results near "
        "seams may differ slightly from a whole-image run",
        list(sizes),
        field,
        list(blends),
    )
