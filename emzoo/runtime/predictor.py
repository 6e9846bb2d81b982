"""Run a model on images: normalise -> tile -> infer -> stitch -> post-process.

The :class:`Predictor` loads the weights once and is reused for every image of a run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from emzoo.errors import InputError, UsageError, render
from emzoo.io.meta import Image, ImageMeta
from emzoo.package.load import ModelPackage, open_model
from emzoo.package.spec import TensorSpec
from emzoo.runtime import augment, inner, processing
from emzoo.runtime.backends import Backend, choose_weights, load_backend
from emzoo.runtime.backends.torch_weights import cuda_weight_format
from emzoo.runtime.batching import Batches
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
        trust_package_code: bool = False,
        device: str | DeviceSpec = "auto",
        settings: TileSettings | None = None,
    ):
        """``trust_package_code`` lets ``pytorch_state_dict`` weights run the package's own Python
        code (its architecture); without it only code emzoo trusts runs (:mod:`emzoo.package.trust`)."""
        self.requested_device = DeviceSpec.parse(device)
        package = model if isinstance(model, ModelPackage) else open_model(model)
        self.package = package.trusting(trust_package_code)
        self.spec = self.package.spec
        preferred = weight_format or cuda_weight_format(self.package, self.requested_device)  # CUDA: torch
        self.weights = choose_weights(self.package, preferred)
        self.backend: Backend = load_backend(self.package, self.weights, self.requested_device)
        self.settings = settings or TileSettings()
        # test-time augmentation: asked for, else the package's own choice (config.emzoo.tta)
        self._turns = True  # may test-time augmentation turn blocks (square pixels); set by run()
        self.tta = bool(
            self.settings.tta if self.settings.tta is not None else self.spec.emzoo.get("tta", False)
        )
        self.last_plan: Plan | None = None
        self._taps: list[inner.RegionStatistics] = []  # read during the next run() (see tap())
        self._tapped: list[str] = []  # inner tensors the backend returns after the outputs
        # the normalisation statistics of the last run() (per tensor id, as its ``statistics``)
        self.last_statistics: dict[str, dict] = {}
        # blocks in batches (halved when out of memory); on CUDA the next batch is read while one runs
        self.batches = Batches(self.backend.device, prefetch=self.backend.device.startswith("cuda"))
        # int8, bf16/fp16 (or a refusal) when the device asks for a precision other than fp32; see
        # emzoo.runtime.backends.precision: the report says which precision runs and how far it is from fp32
        from emzoo.runtime.backends.precision import lower_precision

        self.backend, self.precision = lower_precision(self)

    @property
    def device(self) -> str:
        return self.backend.device

    def tap(self, statistics: inner.RegionStatistics) -> bool:
        """Read the network's inner tensor ``statistics.name`` into ``statistics`` during the next
        :meth:`run` (:mod:`emzoo.runtime.inner`); False, and nothing read, where the backend cannot."""
        if statistics.name not in self._tapped:
            with_outputs = getattr(self.backend, "with_outputs", None)
            backend = None if with_outputs is None else with_outputs([*self._tapped, statistics.name])
            if backend is None:
                return False
            self.backend, self._tapped = backend, [*self._tapped, statistics.name]
        self._taps.append(statistics)
        return True

    # -- images in, images out ------------------------------------------------------------------

    def predict(
        self,
        images: Image | Mapping[str, Image],
        *,
        progress: Progress | None = None,
        keep_axes: bool = False,
    ) -> dict[str, Image]:
        """Predict one sample: an :class:`Image` (one-input models) or one per input id; the outputs
        as :meth:`to_image` makes them (``keep_axes``: every declared axis but batch)."""
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
                data = image.data
                if np.dtype(data.dtype) == np.bool_:  # masks: statistics and ops take numbers
                    data = np.asarray(data).view(np.uint8)
                arrays[tensor.id] = apply_layout(data, input_layout(data, image.meta.axes, tensor))
        reference = images[self.spec.inputs[0].id].meta
        size = reference.pixel_size
        square = (
            "y" not in size or "x" not in size or abs(size["y"] - size["x"]) <= 0.01 * max(size["x"], 1e-12)
        )
        outputs = self.run(arrays, progress=progress, square_pixels=square)
        return {
            tid: self.to_image(self.spec.output(tid), data, reference, keep_axes=keep_axes)
            for tid, data in outputs.items()
        }

    def to_image(
        self, tensor: TensorSpec, data: np.ndarray, reference: ImageMeta, *, keep_axes: bool = False
    ) -> Image:
        """One output tensor (model axes, batch of one) as an image with ``reference``'s calibration.

        The batch axis is dropped, and a channel axis of length one (a ``(1, 1, 1, 512, 512)``
        output is a ``zyx`` image of ``(1, 512, 512)``), unless ``keep_axes``: then every other axis
        the package declares stays, in its order (``czyx``, ``(1, 1, 512, 512)``)."""
        letters, _ = output_axes(tensor)
        take = tuple(0 if a.type == "batch" else slice(None) for a in tensor.axes)
        arr = data[take]
        if not keep_axes and "c" in letters and arr.shape[letters.index("c")] == 1 and len(letters) > 1:
            arr = arr[(slice(None),) * letters.index("c") + (0,)]  # a view: np.take would copy
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
        square_pixels: bool = True,
    ) -> dict[str, np.ndarray]:
        """Run on whole tensors in the model's axis order (batch of one); returns every output.

        ``statistics_from`` gives the tensors whose per-sample statistics normalise ``inputs``
        (default: ``inputs`` themselves), also those of the reference tensors that processing steps
        name (``reference_tensor``, pre- and post-processing): streaming prediction passes the whole
        lazy image while ``inputs`` is one chunk of it, so every chunk is normalised alike.
        ``statistics`` (a dict, per tensor id, of :func:`processing.bind` memos) keeps those
        statistics between calls: the first call fills it, later calls with the same dict do not
        read ``statistics_from`` again (see :meth:`input_statistics`). With test-time augmentation
        (:attr:`tta`), ``square_pixels`` False keeps to the transforms that never swap ``y`` and ``x``.
        """
        source = statistics_from if statistics_from is not None else inputs
        taps, self._taps = self._taps, []
        statistics = {} if statistics is None else statistics
        self.last_statistics = statistics
        pre, post, refs = self._bind(source, statistics, only=inputs)
        inputs = dict(inputs)
        for t in self.spec.inputs:
            if t.id in inputs and processing.varying_axes(t.processing, t.axis_ids) & _spatial(t):
                # statistics per slice of a cut axis: pre-process the whole tensor, then cut it
                inputs[t.id] = pre[t.id](np.asarray(inputs[t.id]))
                pre[t.id] = _unchanged
        plan = self.plan(inputs)
        self.last_plan = plan
        self._turns = square_pixels  # may test-time augmentation turn blocks by 90 degrees
        if plan is None:
            return self._run_whole(inputs, pre, post, refs, taps)
        return self._run_tiled(inputs, pre, post, refs, plan, progress, taps)

    def _bind(self, source: Mapping[str, object], statistics: dict[str, dict] | None, *, only=None):
        """The pre-processing of each input and the post-processing of each output that any block
        can go through (None: it needs statistics of the whole output), statistics from ``source``;
        and the reference tensors (the raw inputs of ``source``)."""
        refs = processing.references(self.spec, source)

        def memo(tensor_id: str) -> dict | None:
            return None if statistics is None else statistics.setdefault(tensor_id, {})

        pre = {
            t.id: processing.bind(
                t.processing, processing.Tensor(source.get(t.id), t.axis_ids), refs, memo=memo(t.id)
            )
            for t in self.spec.inputs
            if t.id in (source if only is None else only)
        }
        post = {
            t.id: None
            if any(processing.needs_own_stats(op) for op in t.processing)
            or processing.varying_axes(t.processing, t.axis_ids) & _spatial(t)
            else processing.bind(t.processing, processing.Tensor(None, t.axis_ids), refs, memo=memo(t.id))
            for t in self.spec.outputs
        }
        return pre, post, refs

    def input_statistics(self, whole: Mapping[str, object]) -> dict[str, dict]:
        """The per-sample statistics of the inputs' pre-processing (and of the reference tensors of
        the outputs' post-processing), computed on ``whole`` (tensors in the model's axis order, lazy
        ones read in a streaming pass): plain numpy arrays to pass as ``statistics`` to :meth:`run`
        for every chunk of the image (also to other processes)."""
        stats: dict[str, dict] = {}
        self._bind(whole, stats)
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
            batch_for=lambda sizes, n: self.batches.fit(
                self.backend, self._probe_setup(grid, outputs, list(sizes)).input_shapes, n
            ),
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
            result = cached_radius(key, lambda setup=setup: probe_radius(self._outputs_only, setup))
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

    def _run_batch(self, arrays: list[np.ndarray], tensors: list[TensorSpec]) -> list[np.ndarray]:
        """The network on one batch of blocks of the ``tensors`` (the inputs given, in order); with
        test-time augmentation, the mean of its outputs over the flips and turns of the blocks. The
        tapped inner tensors follow the outputs (of the blocks as they are)."""
        yx_in = [_yx(t) for t in tensors]
        if not self.tta or any(p is None for p in yx_in):
            return self._run_network(arrays)
        yx_out = [_yx(t) for t in self.spec.outputs]
        first = self._run_network(arrays)
        first, tapped = first[: len(yx_out)], first[len(yx_out) :]
        square = all(a.shape[i] == a.shape[j] for a, (i, j) in zip(arrays, yx_in, strict=True))
        square = square and self._turns
        square = square and all(
            p is None or o.shape[p[0]] == o.shape[p[1]] for o, p in zip(first, yx_out, strict=True)
        )
        group = augment.transforms(rotations=square)
        sums = [o.astype(np.float32) for o in first]
        for transform in group[1:]:
            outs = self._run_network(
                [augment.apply(a, transform, p) for a, p in zip(arrays, yx_in, strict=True)]
            )[: len(yx_out)]
            for total, out, p in zip(sums, outs, yx_out, strict=True):
                total += out if p is None else augment.undo(out, transform, p)
        return [total / np.float32(len(group)) for total in sums] + tapped

    def _tapped_blocks(self, results: list[np.ndarray], taps) -> list[np.ndarray]:
        """Each tap's inner tensor among ``results`` (the outputs, then the tapped tensors)."""
        return [results[len(self.spec.outputs) + self._tapped.index(t.name)] for t in taps]

    def _outputs_only(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return self._run_network(arrays)[: len(self.spec.outputs)]

    def _run_network(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """The package's outputs, then the tapped inner tensors (the backend returns them last)."""
        outs = self.backend.run(arrays)
        n = len(self.spec.outputs)
        if len(outs) < n + len(self._tapped):
            raise InputError(f"the network returned {len(outs)} tensor(s), the package describes {n}")
        return [np.asarray(o) for o in [*outs[:n], *outs[len(outs) - len(self._tapped) :]]]

    def _run_tiled(
        self, inputs, pre, post, refs, plan: Plan, progress: Progress | None, taps=()
    ) -> dict[str, np.ndarray]:
        spec = self.spec
        stitchers = {}
        for t in spec.outputs:
            op = plan.outputs[t.id]
            stitchers[t.id] = Stitcher(plan.axes, op.dims, op.maps, post=post[t.id])
        tiles = list(iter_tiles(plan.axes))
        in_tensors = [t for t in spec.inputs if t.id in inputs]

        def prepare(group) -> list[np.ndarray]:  # the group's blocks, normalised, batched per input
            arrays = []
            for i, t in enumerate(in_tensors):
                dims = tuple(g.input_dims[i] for g in plan.grid)
                blocks = [pre[t.id](read_block(inputs[t.id], plan.axes, tile, dims)) for tile in group]
                arrays.append(
                    blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=_batch_dim(t) or 0)
                )
            return arrays

        done, shape = 0, "x".join(str(a.block) for a in plan.axes)
        run = partial(self._run_batch, tensors=in_tensors)
        for group, results in self.batches.run(tiles, plan.batch_size, prepare, run, block=shape):
            done += len(group)
            inner.feed_tiles(taps, self._tapped_blocks(results, taps), plan, group)
            for t, result in zip(spec.outputs, results[: len(spec.outputs)], strict=True):
                bdim = _batch_dim(t)
                for i, tile in enumerate(group):
                    block = result if len(group) == 1 or bdim is None else np.take(result, [i], axis=bdim)
                    stitchers[t.id].add(tile, block)
            if progress is not None:
                progress(done, len(tiles))
        outputs = {}
        for t in spec.outputs:
            stitcher = stitchers[t.id]
            data = stitcher.result()
            outputs[t.id] = (
                data if stitcher.post is not None else processing.postprocess_whole(t, data, post[t.id], refs)
            )
        return outputs

    def _run_whole(self, inputs, pre, post, refs, taps=()) -> dict[str, np.ndarray]:
        """One call with every input padded (mirrored, far end) to a size the model accepts."""
        spec = self.spec
        arrays, lengths, given = [], {}, []
        for t in spec.inputs:
            if t.id not in inputs:
                continue
            given.append(t)
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
        results = self._run_batch(arrays, given)
        if taps and _yx(given[0]) is not None:
            shape = tuple(arrays[0].shape[d] for d in _yx(given[0]))
            inner.feed_whole(taps, self._tapped_blocks(results, taps), shape)
        outputs = {}
        for t, data in zip(spec.outputs, results[: len(spec.outputs)], strict=True):
            index = [slice(None)] * data.ndim
            for d, axis in enumerate(t.axes):
                if axis.is_spatial and axis.ref is not None and (axis.ref.tensor, axis.ref.axis) in lengths:
                    ref_axis = spec.tensor(axis.ref.tensor).axis(axis.ref.axis)
                    n = lengths[(axis.ref.tensor, axis.ref.axis)]
                    index[d] = slice(0, round(n * ref_axis.scale / axis.scale + axis.ref.offset))
            raw = np.asarray(data[tuple(index)], dtype=np.float32)
            outputs[t.id] = processing.postprocess_whole(t, raw, post[t.id], refs)
        return outputs


def _yx(t: TensorSpec) -> tuple[int, int] | None:
    """The indices of a tensor's ``y`` and ``x`` axes, or None when it lacks one of them."""
    ids = [a.id for a in t.axes]
    return (ids.index("y"), ids.index("x")) if "y" in ids and "x" in ids else None


def _spatial(t: TensorSpec) -> set[str]:
    return {a.id for a in t.axes if a.is_spatial}


def _unchanged(x: np.ndarray) -> np.ndarray:
    return x


def _batch_dim(t: TensorSpec) -> int | None:
    return next((i for i, a in enumerate(t.axes) if a.type == "batch"), None)


def predict(
    model: ModelPackage | str | Path,
    image: np.ndarray,
    *,
    axes: str = "yx",
    weight_format: str | None = None,
    trust_package_code: bool = False,
    device: str = "auto",
    tile: tuple[int, ...] | None = None,
    halo: int | None = None,
    precision: str = "fp32",
    tta: bool | None = None,
    rescale: str = "off",
    pixel_size: float | str | None = None,
) -> dict[str, np.ndarray]:
    """Predict one image (numpy array with ``axes``); returns each output as a numpy array.
    ``precision``: ``fp32``, ``int8`` (ONNX weights on CPU) or ``bf16``/``fp16`` (torch weights on CUDA;
    see :mod:`emzoo.runtime.backends.precision`);
    ``tta``: test-time augmentation (None: as the package asks; see :mod:`emzoo.runtime.augment`);
    ``pixel_size``: the image's (``"8nm"``, ``"4Å"``, a number in the model's unit); ``rescale="auto"``
    resamples it to the model's training pixel size and the outputs back (:mod:`emzoo.runtime.rescale`).

    Examples
    --------
    >>> out = predict("zoo_models/em-membrane-unet2d", image, axes="yx")  # doctest: +SKIP
    """
    from emzoo.runtime.rescale import check_rescale, model_notes, parse_pixel_size, sample_grid

    size, rescale = parse_pixel_size(pixel_size), check_rescale(rescale)  # checked before loading
    predictor = Predictor(
        model,
        weight_format=weight_format,
        trust_package_code=trust_package_code,
        device=DeviceSpec.parse(device, precision=precision),
        settings=TileSettings(tile=tile, halo=halo, tta=tta),
    )
    notes = model_notes(predictor.spec, rescale, size)
    grid = sample_grid(predictor.spec, {"image": Image(image, ImageMeta(axes=axes))}, rescale, size)
    for note in [*notes, *grid.notes]:
        log.info(render(note))
    result = grid.restore(predictor.predict(grid.model_images["image"]))
    return {k: v.data for k, v in result.items()}
