"""ONNX weights through onnxruntime: CUDA when available (or asked for), else CPU; one session."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emzoo.errors import BackendError
from emzoo.package.load import ModelPackage
from emzoo.package.spec import Weights
from emzoo.runtime.backends.registry import register_backend
from emzoo.runtime.settings import DeviceSpec

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(uint16)": np.uint16,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def _import_ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendError(
            "ONNX weights need onnxruntime, which is not installed: pip install onnxruntime "
            "(onnxruntime-gpu for NVIDIA GPUs), or the [cpu] ([gpu]) extra of emzoo"
        ) from e
    return onnxruntime


def providers_for(device: DeviceSpec, available: Sequence[str]) -> list:
    kind, index = device.kind, device.index or 0
    has_cuda = "CUDAExecutionProvider" in available
    if kind == "cuda" and not has_cuda:
        raise BackendError(
            "{device=cuda} was asked for, but this onnxruntime has no CUDAExecutionProvider "
            f"(it has {', '.join(available)}): pip uninstall onnxruntime, then pip install onnxruntime-gpu "
            "(the [gpu] extra of emzoo in place of [cpu])"
        )
    if kind == "cuda" or (kind == "auto" and has_cuda):
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxBackend:
    format = "onnx"

    def __init__(self, path: str, device: DeviceSpec, *, model: bytes | None = None):
        """``model``: the graph to run in place of the file ``path`` (:meth:`with_outputs`)."""
        ort = _import_ort()
        self.path = path  # the model file (int8: the quantized copy in the cache)
        self.device_spec = device
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # tiles of one size repeat, but a pre-planned memory pattern for them costs ~25% more peak
        # memory on CPU (measured: 594 vs 452 MB for a 912 px U-Net block) for no measurable speed
        options.enable_mem_pattern = False
        providers = providers_for(device, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(model or path, sess_options=options, providers=providers)
        except Exception as e:
            raise BackendError(f"onnxruntime cannot load {path}: {e}") from e
        used = self.session.get_providers()
        cuda = "cuda" if device.index is None else f"cuda:{device.index}"
        self.device = cuda if "CUDAExecutionProvider" in used else "cpu"
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_types = [_ORT_TYPES.get(i.type, np.float32) for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def with_outputs(self, names: Sequence[str]) -> OnnxBackend | None:
        """This network returning, after its own outputs, the tensors ``names`` that it computes
        on the way (:mod:`emzoo.runtime.inner`); None when one is not in the graph, the weights keep
        data outside the graph file, or the ``onnx`` package is not installed."""
        try:
            import onnx
        except ImportError:
            return None
        model = onnx.load(self.path, load_external_data=False)
        external = onnx.TensorProto.EXTERNAL
        if any(t.data_location == external for t in model.graph.initializer):
            return None  # a graph with its data beside it: not rewritten in memory
        computed = {name for node in model.graph.node for name in node.output}
        if not set(names) <= computed:
            return None
        model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
        return OnnxBackend(self.path, self.device_spec, model=model.SerializeToString())

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        feed = {
            name: np.ascontiguousarray(x, dtype=t)
            for name, x, t in zip(self.input_names, inputs, self.input_types, strict=False)
        }
        try:
            return self.session.run(self.output_names, feed)
        except Exception as e:  # onnxruntime's errors name shapes; keep them, drop the traceback
            shapes = ", ".join("x".join(map(str, x.shape)) for x in feed.values())
            raise BackendError(f"onnxruntime failed on a block of shape {shapes}: {e}") from e


@register_backend("onnx")
def load_onnx(package: ModelPackage, weights: Weights, device: DeviceSpec) -> OnnxBackend:
    path = package.verified_file(weights.source, weights.sha256)
    if weights.external_data:
        package.verified_file(weights.external_data, weights.external_data_sha256)
    return OnnxBackend(str(path), device)
