"""Run a model on images: normalise -> tile -> infer -> stitch -> post-process.

The :class:`Predictor` loads the weights once and is reused for every image of a run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from emzoo.errors import InputError, UsageError
from emzoo.io.meta import Image, ImageMeta
from emzoo.runtime import processing
from emzoo.runtime.backends import Backend, choose_weights, load_backend
from emzoo.runtime.layout import apply_layout, input_layout, output_axes
from emzoo.runtime.package import ModelPackage, open_model
from emzoo.runtime.receptive_field import ProbeSetup, cached_radius, probe_radius
from emzoo.runtime.spec import Axis, ModelSpec, TensorSpec
from emzoo.runtime.tiling import (
    AxisRule,
    AxisTiling,
    OutputAxisMap,
    Stitcher,
    choose_block,
    iter_tiles,
    mirror_pad,
    plan_axis,
    read_block,
)

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]

# largest block edge chosen automatically: 512-1024 px tiles beat whole-image calls on CPU; for the
# membrane U-Net on 4096² (2 cores) 768 px took 7.6 s / 0.43 GB peak RSS, 1024 px 8.3 s / 0.62 GB,
# 512 px 9.2 s / 0.38 GB
MAX_BLOCK = {("cpu", 2): 768, ("cpu", 3): 128, ("cuda", 2): 2048, ("cuda", 3): 256}
PROBE_SIZE = {2: (256, 512), 3: (64, 128)}
RF_MARGIN = 2


@dataclass(frozen=True)
class TileSettings:
    """User overrides; None means: chosen automatically."""

    tile: tuple[int, ...] | None = None  # block (model input) size per tiled axis
    halo: int | None = None  # input pixels of context kept on each interior side
    blend: int | None = None  # overlap (pixels) mixed with linear ramps
    batch_size: int | None = None


@dataclass(frozen=True)
class GridAxis:
    """An axis that all inputs share and that is cut into blocks."""

    id: str
    length: int
    rule: AxisRule
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


def _rule(spec: ModelSpec, tensor: TensorSpec, axis: Axis) -> AxisRule:
    if axis.ref is not None:
        try:
            ref_tensor = spec.input(axis.ref.tensor)
        except KeyError:
            return AxisRule(min=1, step=1)
        return _rule(spec, ref_tensor, ref_tensor.axis(axis.ref.axis))
    if axis.size is not None:
        return AxisRule(fixed=axis.size)
    if axis.min is not None:
        return AxisRule(min=axis.min, step=axis.step)
    return AxisRule(min=1, step=1)


def _ceil_div(a: float, b: float) -> int:
    return math.ceil(a / b - 1e-9)


class Predictor:
    """A loaded model, ready to predict any number of images.

    Examples
    --------
    >>> p = Predictor("zoo_models/em-membrane-unet2d")  # doctest: +SKIP
    >>> out = p.predict(Image(array, ImageMeta(axes="yx")))  # doctest: +SKIP
    >>> out["probability"].data.shape  # doctest: +SKIP
    """

    def __init__(
        self,
        model: ModelPackage | str | Path,
        *,
        weight_format: str | None = None,
        device: str = "auto",
        settings: TileSettings | None = None,
    ):
        self.package = model if isinstance(model, ModelPackage) else open_model(model)
        self.spec = self.package.spec
        self.weights = choose_weights(self.package, weight_format)
        self.backend: Backend = load_backend(self.package, self.weights, device)
        self.settings = settings or TileSettings()
        self.last_plan: Plan | None = None

    @property
    def device(self) -> str:
        return self.backend.device

    # -- images in, images out ------------------------------------------------------------------

    def predict(
        self, images: Image | Mapping[str, Image], *, progress: Progress | None = None
    ) -> dict[str, Image]:
        """Predict one sample: an :class:`Image` (one-input models) or one per input id."""
        if isinstance(images, Image):
            if len(self.spec.inputs) != 1:
                ids = ", ".join(t.id for t in self.spec.inputs)
                raise UsageError(
                    f"the model takes {len(self.spec.inputs)} inputs ({ids}): give one image for each"
                )
            images = {self.spec.inputs[0].id: images}
        missing = [t.id for t in self.spec.inputs if t.id not in images and not t.optional]
        if missing:
            raise UsageError(f"no image given for the model input(s) {', '.join(missing)}")
        arrays = {}
        for tensor in self.spec.inputs:
            if tensor.id in images:
                image = images[tensor.id]
                arrays[tensor.id] = apply_layout(
                    image.data, input_layout(image.data, image.meta.axes, tensor)
                )
        outputs = self.run(arrays, progress=progress)
        reference = images[self.spec.inputs[0].id].meta
        return {tid: self._to_image(self.spec.output(tid), data, reference) for tid, data in outputs.items()}

    def _to_image(self, tensor: TensorSpec, data: np.ndarray, reference: ImageMeta) -> Image:
        letters, _ = output_axes(tensor)
        take = tuple(0 if a.type == "batch" else slice(None) for a in tensor.axes)
        arr = data[take]
        if "c" in letters and arr.shape[letters.index("c")] == 1 and len(letters) > 1:
            arr = np.take(arr, 0, axis=letters.index("c"))
            letters = letters.replace("c", "")
        pixel_size = {}
        for axis in tensor.axes:
            letter = {"x": "x", "y": "y", "z": "z"}.get(axis.id)
            if letter and axis.ref is not None and letter in reference.pixel_size:
                ref_axis = self.spec.tensor(axis.ref.tensor).axis(axis.ref.axis)
                pixel_size[letter] = reference.pixel_size[letter] * axis.scale / ref_axis.scale
        meta = replace(reference, axes=letters, pixel_size=pixel_size, format="", header={})
        return Image(arr, meta)

    # -- tensors in, tensors out (model axis order) ---------------------------------------------

    def run(
        self,
        inputs: Mapping[str, object],
        *,
        progress: Progress | None = None,
        statistics_from: Mapping[str, object] | None = None,
        statistics: dict[str, dict] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run on whole tensors in the model's axis order (batch of one); returns every output.

        ``statistics_from`` gives the tensors whose per-sample statistics normalise ``inputs``
        (default: ``inputs`` themselves): streaming prediction passes the whole lazy image while
        ``inputs`` is one chunk of it, so every chunk is normalised alike. ``statistics`` (a dict,
        per input id, of :func:`processing.bind` memos) keeps those statistics between calls: the
        first call fills it, later calls with the same dict do not read ``statistics_from`` again
        (see :meth:`input_statistics`).
        """
        source = statistics_from if statistics_from is not None else inputs
        pre = {
            t.id: processing.bind(
                t.processing,
                processing.Tensor(source.get(t.id), t.axis_ids),
                memo=None if statistics is None else statistics.setdefault(t.id, {}),
            )
            for t in self.spec.inputs
            if t.id in inputs
        }
        plan = self.plan(inputs)
        self.last_plan = plan
        if plan is None:
            return self._run_whole(inputs, pre)
        return self._run_tiled(inputs, pre, plan, progress)

    def input_statistics(self, whole: Mapping[str, object]) -> dict[str, dict]:
        """The per-sample statistics of the inputs' pre-processing, computed on ``whole`` (tensors in
        the model's axis order, lazy ones read in a streaming pass): plain numpy arrays to pass as
        ``statistics`` to :meth:`run` for every chunk of the image (also to other processes)."""
        stats: dict[str, dict] = {}
        for t in self.spec.inputs:
            if t.id in whole:
                processing.bind(
                    t.processing, processing.Tensor(whole[t.id], t.axis_ids), memo=stats.setdefault(t.id, {})
                )
        return stats

    # -- planning --------------------------------------------------------------------------------

    def _grid(
        self, inputs: Mapping[str, object]
    ) -> tuple[tuple[GridAxis, ...], dict[str, OutputPlan]] | None:
        """The shared tiled axes and how each output follows them; None if the model cannot be tiled."""
        spec = self.spec
        first = spec.inputs[0]
        shape0 = inputs[first.id].shape
        grid = []
        for axis in first.spatial_axes:
            dims, length = [], shape0[first.axis_ids.index(axis.id)]
            for t in spec.inputs:
                if t.id not in inputs:
                    continue
                if axis.id not in t.axis_ids or inputs[t.id].shape[t.axis_ids.index(axis.id)] != length:
                    return None
                dims.append(t.axis_ids.index(axis.id))
            grid.append(GridAxis(axis.id, int(length), _rule(spec, first, axis), tuple(dims)))
        ids = [g.id for g in grid]
        outputs = {}
        for t in spec.outputs:
            dims, maps, halos = [None] * len(grid), [None] * len(grid), [0] * len(grid)
            for d, axis in enumerate(t.axes):
                if axis.is_spatial:
                    if axis.ref is None or axis.ref.axis not in ids or axis.ref.tensor not in inputs:
                        return None
                    k = ids.index(axis.ref.axis)
                    ref_axis = spec.tensor(axis.ref.tensor).axis(axis.ref.axis)
                    dims[k] = d
                    maps[k] = OutputAxisMap(ref_axis.scale / axis.scale, axis.ref.offset)
                    halos[k] = axis.halo
                elif axis.type not in ("batch", "channel") and axis.size is None:
                    return None
            if None in dims:
                return None
            outputs[t.id] = OutputPlan(tuple(dims), tuple(maps), tuple(halos))
        return tuple(grid), outputs

    def plan(self, inputs: Mapping[str, object]) -> Plan | None:
        """Block size, halo and blending per axis; None when the outputs cannot be tiled."""
        found = self._grid(inputs)
        if found is None:
            return None
        grid, outputs = found
        s = self.settings
        ndim = len(grid)
        if s.tile is not None and len(s.tile) not in (1, ndim):
            raise UsageError(f"--tile takes 1 or {ndim} sizes for this model, got {len(s.tile)}")
        max_block = MAX_BLOCK.get((self.device, ndim), MAX_BLOCK[(self.device, 2)] if ndim < 2 else 96)
        pads, declared, aligns = [], [], []
        for k, g in enumerate(grid):
            ms = [o.maps[k] for o in outputs.values()]
            hs = [o.halos[k] for o in outputs.values()]
            pads.append(max((_ceil_div(max(0, -m.offset) / 2, m.ratio) for m in ms), default=0))
            declared.append(
                max(
                    (_ceil_div(h + max(0, -m.offset) / 2, m.ratio) for m, h in zip(ms, hs, strict=True)),
                    default=0,
                )
            )
            align = g.rule.natural_alignment()
            for m in ms:  # block starts must map to whole output pixels
                align = math.lcm(align, _ceil_div(1, _fraction_step(m.ratio)))
            aligns.append(align)

        def blocks(halos: list[int], blends: list[int]) -> list[int]:
            if s.tile is not None:
                sizes = list(s.tile) * (ndim if len(s.tile) == 1 else 1)
                return [self._accepted_tile(g, n) for g, n in zip(grid, sizes, strict=True)]
            return [
                choose_block(g.length, g.rule, h, align=a, max_block=max_block, blend=b, pad_before=p)
                for g, h, a, b, p in zip(grid, halos, aligns, blends, pads, strict=True)
            ]

        zero = [0] * ndim
        base = blocks(declared, zero)
        single = all(g.length + 2 * p <= n for g, n, p in zip(grid, base, pads, strict=True))
        rf: list[int | None] = [None] * ndim
        if not single and (s.halo is None or s.blend is None):
            rf = self._receptive_field(grid, outputs)
        want = [
            max(s.halo, p) if s.halo is not None else d if r is None else max(d, r + RF_MARGIN + p)
            for d, r, p in zip(declared, rf, pads, strict=True)
        ]
        sizes = base if single else blocks(want, zero)
        halos, blends = [], []
        for k in range(ndim):
            n, a = sizes[k], aligns[k]
            h = declared[k] if single else want[k]
            if not single and s.halo is None:  # keep at least half of a fixed/given block as stride
                h = min(h, max(declared[k], (n - max(n // 2, a)) // 2))
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
            sizes = blocks(halos, blends)
        try:
            axes = tuple(
                plan_axis(g.length, n, h, align=a, blend=b, pad_before=p)
                for g, n, h, a, b, p in zip(grid, sizes, halos, aligns, blends, pads, strict=True)
            )
        except ValueError as e:
            raise UsageError(f"cannot tile this image: {e}") from None
        if any(blends) and s.blend is None:
            log.warning(
                "blocks of %s px cannot hold the receptive field (%s px) with a halo: tiles are blended "
                "over %s px, so results near seams may differ slightly from a whole-image run",
                sizes,
                rf,
                blends,
            )
        batch = s.batch_size or (4 if self.device == "cuda" else 1)
        batch_axis = next((a for a in self.spec.inputs[0].axes if a.type == "batch"), None)
        if batch_axis is None or batch_axis.size == 1:
            batch = 1
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

    def _accepted_tile(self, g: GridAxis, n: int) -> int:
        if g.rule.accepts(n):
            return n
        valid = g.rule.valid(n)
        if g.rule.fixed is not None:
            raise UsageError(f"--tile {n}: this model takes exactly {g.rule.fixed} px along {g.id}")
        raise UsageError(
            f"--tile {n}: the model takes {g.rule.min}+{g.rule.step}k px along {g.id}; use {valid}"
        )

    def _receptive_field(
        self, grid: tuple[GridAxis, ...], outputs: dict[str, OutputPlan]
    ) -> list[int | None]:
        ndim = len(grid)
        sizes_options = PROBE_SIZE.get(ndim, PROBE_SIZE[3])
        result: list[int | None] = [None] * ndim
        for size in sizes_options:
            sizes = [g.rule.valid(size) for g in grid]
            setup = self._probe_setup(grid, outputs, sizes)
            weights_id = self.weights.sha256 or self.spec.name
            key = f"rf2-{weights_id}-{self.weights.format}-{'x'.join(map(str, sizes))}"
            result = cached_radius(key, lambda setup=setup: probe_radius(self._run_batch, setup))
            if all(r is not None for r in result) or any(g.rule.fixed for g in grid):
                break
        return result

    def _probe_setup(self, grid, outputs: dict[str, OutputPlan], sizes: list[int]) -> ProbeSetup:
        shapes, dims = [], []
        for t in self.spec.inputs:
            shape = []
            for axis in t.axes:
                if axis.type == "batch":
                    shape.append(1)
                elif axis.type == "channel":
                    shape.append(t.n_channels or 1)
                elif axis.id in [g.id for g in grid]:
                    shape.append(sizes[[g.id for g in grid].index(axis.id)])
                else:
                    shape.append(axis.size or 1)
            shapes.append(tuple(shape))
            dims.append(tuple(t.axis_ids.index(g.id) for g in grid))
        plans = [outputs[t.id] for t in self.spec.outputs]
        return ProbeSetup(
            input_shapes=tuple(shapes),
            input_dims=tuple(dims),
            output_dims=tuple(p.dims for p in plans),
            ratios=tuple(tuple(m.ratio for m in p.maps) for p in plans),
            offsets=tuple(tuple(m.offset for m in p.maps) for p in plans),
        )

    # -- execution -------------------------------------------------------------------------------

    def _run_batch(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        outs = self.backend.run(arrays)
        if len(outs) < len(self.spec.outputs):
            raise InputError(
                f"the network returned {len(outs)} tensor(s), the package describes {len(self.spec.outputs)}"
            )
        return [np.asarray(o) for o in outs[: len(self.spec.outputs)]]

    def _run_tiled(self, inputs, pre, plan: Plan, progress: Progress | None) -> dict[str, np.ndarray]:
        spec = self.spec
        stitchers = {}
        for t in spec.outputs:
            stat_free = not any(processing.needs_stats(op) for op in t.processing)
            post = processing.bind(t.processing, processing.Tensor(None, t.axis_ids)) if stat_free else None
            op = plan.outputs[t.id]
            stitchers[t.id] = Stitcher(plan.axes, op.dims, op.maps, post=post)
        tiles = list(iter_tiles(plan.axes))
        in_tensors = [t for t in spec.inputs if t.id in inputs]
        for first in range(0, len(tiles), plan.batch_size):
            group = tiles[first : first + plan.batch_size]
            arrays = []
            for i, t in enumerate(in_tensors):
                dims = tuple(g.input_dims[i] for g in plan.grid)
                blocks = [pre[t.id](read_block(inputs[t.id], plan.axes, tile, dims)) for tile in group]
                arrays.append(
                    blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=_batch_dim(t) or 0)
                )
            results = self._run_batch(arrays)
            for t, result in zip(spec.outputs, results, strict=True):
                bdim = _batch_dim(t)
                for i, tile in enumerate(group):
                    block = result if len(group) == 1 or bdim is None else np.take(result, [i], axis=bdim)
                    stitchers[t.id].add(tile, block)
            if progress is not None:
                progress(first + len(group), len(tiles))
        outputs = {}
        for t in spec.outputs:
            stitcher = stitchers[t.id]
            data = stitcher.result()
            outputs[t.id] = data if stitcher.post is not None else _postprocess_whole(t, data)
        return outputs

    def _run_whole(self, inputs, pre) -> dict[str, np.ndarray]:
        """One call with every input padded (mirrored, far end) to a size the model accepts."""
        spec = self.spec
        arrays, lengths = [], {}
        for t in spec.inputs:
            if t.id not in inputs:
                continue
            data = inputs[t.id]
            pads = [(0, 0)] * len(t.axes)
            for d, axis in enumerate(t.axes):
                if not axis.is_spatial:
                    continue
                n = int(data.shape[d])
                lengths[(t.id, axis.id)] = n
                rule = _rule(spec, t, axis)
                target = rule.valid(n) if rule.fixed is None or n <= rule.fixed else None
                if target is None:
                    raise InputError(
                        f"input {t.id!r} is {n} px along {axis.id}, but the model takes exactly "
                        f"{rule.fixed} px there and its outputs cannot be stitched from tiles"
                    )
                pads[d] = (0, target - n)
            block = np.asarray(data)
            if any(p != (0, 0) for p in pads):
                block = mirror_pad(block, pads)
            arrays.append(pre[t.id](block))
        results = self._run_batch(arrays)
        outputs = {}
        for t, data in zip(spec.outputs, results, strict=True):
            index = [slice(None)] * data.ndim
            for d, axis in enumerate(t.axes):
                if axis.is_spatial and axis.ref is not None and (axis.ref.tensor, axis.ref.axis) in lengths:
                    ref_axis = spec.tensor(axis.ref.tensor).axis(axis.ref.axis)
                    n = lengths[(axis.ref.tensor, axis.ref.axis)]
                    index[d] = slice(0, round(n * ref_axis.scale / axis.scale + axis.ref.offset))
            outputs[t.id] = _postprocess_whole(t, np.asarray(data[tuple(index)], dtype=np.float32))
        return outputs


def _fraction_step(ratio: float) -> float:
    """The smallest input step that maps to a whole number of output pixels (for ratios like 1/2)."""
    for k in range(1, 65):
        if abs(ratio * k - round(ratio * k)) < 1e-9:
            return 1 / k
    raise InputError(f"output scale ratio {ratio} cannot be tiled")


def _batch_dim(t: TensorSpec) -> int | None:
    return next((i for i, a in enumerate(t.axes) if a.type == "batch"), None)


def _postprocess_whole(t: TensorSpec, data: np.ndarray) -> np.ndarray:
    """Post-process a whole output (statistics, when an op needs them, come from all of it)."""
    if not t.processing:
        return data
    fn = processing.bind(t.processing, processing.Tensor(data, t.axis_ids))
    return fn(data)


def predict(
    model: ModelPackage | str | Path,
    image: np.ndarray,
    *,
    axes: str = "yx",
    weight_format: str | None = None,
    device: str = "auto",
    tile: tuple[int, ...] | None = None,
    halo: int | None = None,
) -> dict[str, np.ndarray]:
    """Predict one image (numpy array with ``axes``); returns each output as a numpy array.

    Examples
    --------
    >>> out = predict("zoo_models/em-membrane-unet2d", image, axes="yx")  # doctest: +SKIP
    """
    predictor = Predictor(
        model,
        weight_format=weight_format,
        device=device,
        settings=TileSettings(tile=tile, halo=halo),
    )
    result = predictor.predict(Image(image, ImageMeta(axes=axes)))
    return {k: v.data for k, v in result.items()}
