"""Run a model on images: normalise -> tile -> infer -> stitch -> post-process.

The :class:`Predictor` loads the weights once and is reused for every image of a run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from emzoo.errors import InputError, UsageError
from emzoo.io.meta import Image, ImageMeta
from emzoo.package.load import ModelPackage, open_model
from emzoo.package.spec import TensorSpec
from emzoo.runtime import processing
from emzoo.runtime.backends import Backend, choose_weights, load_backend
from emzoo.runtime.layout import apply_layout, input_layout, output_axes
from emzoo.runtime.planning import (
    GridAxis,
    OutputPlan,
    Plan,
    axis_rule,
    needs_receptive_field,
    plan_tiles,
    tile_grid,
)
from emzoo.runtime.receptive_field import ProbeSetup, cached_radius, probe_radius
from emzoo.runtime.settings import DeviceSpec, TileSettings
from emzoo.runtime.tiling import Stitcher, iter_tiles, mirror_pad, read_block

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]

PROBE_SIZE = {2: (256, 512), 3: (64, 128)}

__all__ = ["Plan", "Predictor", "predict"]


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
        device: str | DeviceSpec = "auto",
        settings: TileSettings | None = None,
    ):
        self.requested_device = DeviceSpec.parse(device)
        self.package = model if isinstance(model, ModelPackage) else open_model(model)
        self.spec = self.package.spec
        self.weights = choose_weights(self.package, weight_format)
        self.backend: Backend = load_backend(self.package, self.weights, self.requested_device)
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
        return {tid: self.to_image(self.spec.output(tid), data, reference) for tid, data in outputs.items()}

    def to_image(self, tensor: TensorSpec, data: np.ndarray, reference: ImageMeta) -> Image:
        """One output tensor (model axes, batch of one) as an image with ``reference``'s calibration."""
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

    def plan(self, inputs: Mapping[str, object]) -> Plan | None:
        """Block size, halo and blending per axis; None when the outputs cannot be tiled."""
        found = tile_grid(self.spec, {tid: tuple(x.shape) for tid, x in inputs.items()})
        if found is None:
            return None
        grid, outputs = found
        rf = None
        if needs_receptive_field(grid, outputs, self.settings, device=self.device):
            rf = self.receptive_field(grid, outputs)
        batch_axis = next((a for a in self.spec.inputs[0].axes if a.type == "batch"), None)
        return plan_tiles(
            grid,
            outputs,
            self.settings,
            device=self.device,
            receptive_field=rf,
            batchable=batch_axis is not None and batch_axis.size != 1,
        )

    def receptive_field(self, grid: tuple[GridAxis, ...], outputs: dict[str, OutputPlan]) -> list[int | None]:
        """The model's receptive-field radius per grid axis, probed once per weights (cached)."""
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
                rule = axis_rule(spec, t, axis)
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
