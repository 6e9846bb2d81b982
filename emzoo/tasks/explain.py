"""Grad-CAM maps for image-to-value packages: which image regions drove a value (a class score, a count).

Grad-CAM (Selvaraju et al. 2017) takes the last spatial feature maps ``A_k`` of the network and the
gradient of the explained value ``v`` with respect to them; each map is weighted by its mean
gradient, ``cam = relu(sum_k mean(dv/dA_k) A_k)``, brought to the input's size and scaled to
0..1. It needs gradients, so it runs the package's PyTorch weights: ``pytorch_state_dict`` (an
eager module: the layer is found with forward hooks) or ``torchscript`` (the scripted graph is
opened so that its intermediate values come out too). ONNX weights carry no gradients.

Models whose outputs are all images (segmentation, denoising, density maps) are not explained
here: their output map already says where the result comes from. For a density-map counting
package (``config.emzoo.counting``) the map *is* the explanation: every object adds a blob that sums
to 1, and the count is the sum of the map.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emzoo.errors import BackendError, UsageError
from emzoo.io.meta import Image
from emzoo.package.load import ModelPackage, open_model
from emzoo.package.spec import ModelSpec, TensorSpec
from emzoo.runtime import processing
from emzoo.runtime.layout import apply_layout, input_layout
from emzoo.runtime.tiling import mirror_pad

log = logging.getLogger(__name__)

TORCH_FORMATS = ("pytorch_state_dict", "torchscript")

__all__ = ["Explainer", "Explanation", "grad_cam", "overlay_rgb", "value_outputs"]


@dataclass(frozen=True)
class Explanation:
    """The Grad-CAM map of one image (``cam``: the input's spatial shape, float32 in 0..1) and what it
    explains: ``output`` element ``target`` (its channel name, or its flat index), whose
    post-processed value is ``value``; ``layer`` is the feature map it was computed on."""

    cam: np.ndarray
    output: str
    target: str
    value: float
    layer: str
    weight_format: str


def value_outputs(spec: ModelSpec) -> list[TensorSpec]:
    """The outputs with no spatial axis (one value or a few values per image)."""
    return [t for t in spec.outputs if not t.spatial_axes]


def _check_explainable(spec: ModelSpec, source: str) -> None:
    from emzoo.tasks.counting import counting_config

    counting = counting_config(spec)
    if counting is not None:
        raise UsageError(
            f"{source} is a density-map counting model: its output {counting.output!r} is its own "
            "explanation (every object adds a blob that sums to 1 and the count is the sum of the map, "
            f"so the map shows where the count comes from). Run 'emzoo predict {source} IMAGE' and look at "
            "the map and the centres; Grad-CAM is for image-to-value models"
        )
    if not value_outputs(spec):
        ids = ", ".join(t.id for t in spec.outputs)
        raise UsageError(
            f"{source}: Grad-CAM explains image-to-value outputs (one value per image), but every output "
            f"of this model is an image ({ids}): the output map itself shows where the result comes from"
        )
    if len(spec.inputs) != 1:
        raise UsageError(
            f"{source}: Grad-CAM supports models with one input; this one has {len(spec.inputs)}"
        )


def _torch_weights(spec: ModelSpec, source: str, weight_format: str | None):
    have = spec.weight_formats()
    if weight_format is not None:
        if weight_format not in TORCH_FORMATS:
            raise UsageError(
                f"{{weight_format}} {weight_format}: Grad-CAM needs gradients, and "
                + (
                    "ONNX weights carry no gradients (ONNX Runtime only runs the network forward)"
                    if weight_format == "onnx"
                    else f"emzoo cannot take gradients through {weight_format} weights"
                )
                + f"; use pytorch_state_dict or torchscript (this package has: {', '.join(have)})"
            )
        if weight_format not in spec.weights:
            raise UsageError(f"{source} has no {weight_format} weights (it has: {', '.join(have)})")
        return spec.weights[weight_format]
    for fmt in TORCH_FORMATS:
        if fmt in spec.weights:
            return spec.weights[fmt]
    raise UsageError(
        f"{source} has only {', '.join(have)} weights: Grad-CAM needs gradients, which ONNX weights do not "
        "carry; it needs the package's pytorch_state_dict or torchscript weights"
    )


# -- the network's feature maps ------------------------------------------------------------------------

Forward = Callable[[object], tuple[list, list[tuple[str, object]]]]


def _eager_forward(module) -> Forward:
    """Outputs and every leaf module's output (``(name, tensor)``, in execution order)."""

    def run(x):
        found: list[tuple[str, object]] = []
        hooks = [
            m.register_forward_hook(lambda _m, _i, out, name=name: found.append((name, out)))
            for name, m in module.named_modules()
            if name and not list(m.children())
        ]
        try:
            out = module(x)
        finally:
            for h in hooks:
                h.remove()
        return (list(out) if isinstance(out, list | tuple) else [out]), found

    return run


def _script_forward(module) -> Forward:
    """Opens a TorchScript module's graph: its frozen, inlined copy returns every intermediate tensor
    as an extra output (TorchScript modules run no forward hooks)."""
    import torch

    try:
        frozen = torch.jit.freeze(module.eval())
        graph = frozen.graph.copy()
        torch._C._jit_pass_inline(graph)
        outs = list(graph.outputs())
        values = [
            o
            for node in graph.nodes()
            if node.kind() != "prim::Constant"
            for o in node.outputs()
            if o.type().kind() == "TensorType"
        ]
        names = [f"{v.node().kind()} ({v.debugName()})" for v in values]
        tuple_node = graph.create("prim::TupleConstruct", outs + values)
        tuple_node.insertBefore(graph.return_node())
        tuple_node.output().setType(torch._C.TupleType([v.type() for v in outs + values]))
        while list(graph.outputs()):
            graph.eraseOutput(0)
        graph.registerOutput(tuple_node.output())
        fn = torch._C._create_function_from_graph("emzoo_explain_forward", graph)
    except Exception as e:  # private TorchScript API: say what failed instead of a raw trace
        raise BackendError(
            f"cannot open the TorchScript graph for Grad-CAM ({type(e).__name__}: {e}); use the package's "
            "pytorch_state_dict weights ({weight_format=pytorch_state_dict}) if it has them"
        ) from e
    n_out = len(outs)

    def run(x):
        result = fn(frozen, x)
        head = result[:n_out]
        if n_out == 1 and isinstance(head[0], tuple | list):
            head = list(head[0])
        return list(head), list(zip(names, result[n_out:], strict=True))

    return run


def _spatial(act, x) -> bool:
    import torch

    return (
        isinstance(act, torch.Tensor)
        and act.ndim == x.ndim
        and act.requires_grad
        and all(n > 1 for n in act.shape[2:])
    )


def grad_cam(forward: Forward, x, *, output_index: int, element: int | None, layer: str | None):
    """Grad-CAM of network output ``output_index`` (flat ``element`` of its first sample; the
    largest when None) on feature map ``layer`` (the last spatial one when None).

    Returns ``(cam (spatial shape of x, float32, 0..1), element, raw value, layer name)``."""
    import torch

    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        outs, acts = forward(x)
        if output_index >= len(outs):
            raise BackendError(
                f"the network returned {len(outs)} outputs, expected at least {output_index + 1}"
            )
        flat = outs[output_index][0].reshape(-1)
        if element is None:
            element = int(torch.argmax(flat))
        if not 0 <= element < flat.numel():
            raise UsageError(f"the output has {flat.numel()} values: choose an index below {flat.numel()}")
        spatial = [(name, a) for name, a in acts if _spatial(a, x)]
        if layer is not None:
            chosen = [(name, a) for name, a in spatial if name == layer]
            if not chosen:
                names = ", ".join(dict.fromkeys(n for n, _ in spatial)) or "none"
                raise UsageError(f"no spatial feature map named {layer!r}; the network has: {names}")
            name, act = chosen[-1]
        elif spatial:
            name, act = spatial[-1]
        else:
            raise BackendError("the network has no spatial feature map to compute Grad-CAM on")
        value = flat[element]
        (grads,) = torch.autograd.grad(value, act)
    dims = tuple(range(2, act.ndim))
    weights = grads.mean(dim=dims, keepdim=True)
    cam = torch.relu((weights * act.detach()).sum(dim=1, keepdim=True))
    mode = "bilinear" if x.ndim == 4 else "trilinear"
    cam = torch.nn.functional.interpolate(cam, size=tuple(x.shape[2:]), mode=mode, align_corners=False)[0, 0]
    cam = cam.cpu().numpy().astype(np.float32)
    peak = float(cam.max())
    cam = cam / peak if peak > 0 else np.zeros_like(cam)
    return cam, element, float(value.detach()), name


class Explainer:
    """A package loaded for Grad-CAM (reused for every image).

    Examples
    --------
    >>> explainer = Explainer("classifier.zip")  # doctest: +SKIP
    >>> e = explainer.explain(read_image("image.tif"))  # doctest: +SKIP
    >>> e.cam.shape, e.target, e.value  # doctest: +SKIP
    """

    def __init__(
        self,
        model: ModelPackage | str | Path,
        *,
        output: str | None = None,
        weight_format: str | None = None,
        layer: str | None = None,
        device: str = "cpu",
    ):
        from emzoo.runtime.backends import code_refusal, load_backend

        self.package = model if isinstance(model, ModelPackage) else open_model(model)
        spec = self.spec = self.package.spec
        source = self.package.source
        _check_explainable(spec, source)
        candidates = value_outputs(spec)
        if output is None:
            self.output = candidates[0]
        else:
            ids = [t.id for t in candidates]
            if output not in ids:
                raise UsageError(
                    f"{{output}} {output!r}: explainable outputs of {source} are {', '.join(ids)}"
                )
            self.output = spec.output(output)
        self.output_index = [t.id for t in spec.outputs].index(self.output.id)
        self.weights = _torch_weights(spec, source, weight_format)
        untrusted = code_refusal(self.package, self.weights) is not None
        if weight_format is None and untrusted and "torchscript" in spec.weights:
            self.weights = spec.weights["torchscript"]  # needs no package code
        backend = load_backend(self.package, self.weights, device)
        self.device = backend.device
        module = backend.module
        self.forward = (
            _script_forward(module) if self.weights.format == "torchscript" else _eager_forward(module)
        )
        self.layer = layer

    def _element(self, channel: str | int | None) -> int | None:
        if channel is None:
            return None
        names = next((a.channel_names for a in self.output.axes if a.type == "channel"), ())
        if isinstance(channel, str) and not channel.lstrip("-").isdigit():
            if channel not in names:
                raise UsageError(
                    f"{{channel}} {channel!r}: output {self.output.id!r} has channels "
                    f"{', '.join(names) or '(unnamed)'}"
                )
            return names.index(channel)
        return int(channel)

    def _input(self, image: Image) -> tuple[np.ndarray, tuple[int, ...]]:
        """The pre-processed input (padded at the far end to a size the model accepts) and the image's
        own spatial size."""
        t = self.spec.inputs[0]
        arr = np.asarray(apply_layout(image.data, input_layout(image.data, image.meta.axes, t)))
        pre = processing.bind(t.processing, processing.Tensor(arr, t.axis_ids))
        pads, sizes = [(0, 0)] * arr.ndim, []
        for d, axis in enumerate(t.axes):
            if axis.is_spatial:
                n = arr.shape[d]
                sizes.append(n)
                want = axis.rule.valid(n)
                if axis.size is not None and n > axis.size:
                    raise UsageError(
                        f"the model takes exactly {axis.size} px along {axis.id}; the image has {n}"
                    )
                pads[d] = (0, want - n)
        if any(p != (0, 0) for p in pads):
            arr = mirror_pad(arr, pads)
        return np.ascontiguousarray(pre(arr), np.float32), tuple(sizes)

    def explain(self, image: Image, *, channel: str | int | None = None) -> Explanation:
        """Grad-CAM of one image for ``channel`` (a channel name or flat index of the output; default:
        the largest value, as for a predicted class)."""
        import torch

        x, sizes = self._input(image)
        tensor = torch.from_numpy(x).to(self.device)
        cam, element, raw, layer = grad_cam(
            self.forward,
            tensor,
            output_index=self.output_index,
            element=self._element(channel),
            layer=self.layer,
        )
        cam = cam[tuple(slice(0, n) for n in sizes)]
        names = next((a.channel_names for a in self.output.axes if a.type == "channel"), ())
        target = names[element] if len(self.output.axes) == 2 and element < len(names) else str(element)
        return Explanation(
            np.ascontiguousarray(cam),
            self.output.id,
            target,
            self._postprocessed(raw, element),
            layer,
            self.weights.format,
        )

    def _postprocessed(self, raw: float, element: int) -> float:
        """The explained value after the output's post-processing (e.g. a sigmoid); the raw value when
        post-processing needs the other values (a softmax is shown raw)."""
        ops = [op for op in self.output.processing if op.id != "ensure_dtype"]
        if not ops or any(processing.needs_stats(op) or op.id == "softmax" for op in ops):
            return raw
        value = np.full((1,) * len(self.output.axes), raw, np.float32)
        return float(
            processing.apply(list(self.output.processing), processing.Tensor(value, self.output.axis_ids))
        )


_CMAP = np.array(  # a perceptual dark-blue -> yellow ramp (viridis-like), 6 anchors
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37], [255, 255, 255]], np.float32
)


def overlay_rgb(image: np.ndarray, cam: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """``(y, x, 3)`` uint8: the grey image (stretched 0.5-99.5 percentiles) with the map coloured on top
    (transparent where the map is 0)."""
    g = np.asarray(image, np.float32)
    lo, hi = np.percentile(g, [0.5, 99.5])
    grey = np.clip((g - lo) / max(float(hi - lo), 1e-12), 0, 1)[..., None] * 255
    c = np.clip(np.asarray(cam, np.float32), 0, 1) * (len(_CMAP) - 2)
    i = np.floor(c).astype(int)
    f = (c - i)[..., None]
    colour = _CMAP[i] * (1 - f) + _CMAP[np.minimum(i + 1, len(_CMAP) - 1)] * f
    a = alpha * np.clip(np.asarray(cam, np.float32), 0, 1)[..., None] ** 0.5
    return np.clip(grey * (1 - a) + colour * a, 0, 255).astype(np.uint8)
