"""The graph rewrites before int8 quantization are exact, and int8 keeps what it should in fp32."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from emzoo.runtime.backends.int8_graph import (  # noqa: E402
    keep_fp32,
    rewrite_conv_transpose,
    shapes_from_integers,
)


def _model(nodes, initializers, c_in: int, c_out: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_out, None, None])],
        initializers,
    )
    return helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("k", [2, 3])
def test_conv_transpose_with_kernel_equal_stride_becomes_conv_and_shuffle_exactly(k):
    rng = np.random.default_rng(k)
    c_in, c_out = 5, 3
    w = numpy_helper.from_array(rng.normal(size=(c_in, c_out, k, k)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=c_out).astype(np.float32), "b")
    node = helper.make_node(
        "ConvTranspose", ["x", "w", "b"], ["y"], name="up", kernel_shape=[k, k], strides=[k, k]
    )
    model = _model([node], [w, b], c_in, c_out)
    x = rng.normal(size=(1, c_in, 7, 9)).astype(np.float32)
    expected = _run(model, x)
    rewritten, n = rewrite_conv_transpose(model)
    assert n == 1
    ops = [nd.op_type for nd in rewritten.graph.node]
    assert ops[0] == "Conv" and "ConvTranspose" not in ops and "DepthToSpace" not in ops
    assert {"up/as_conv/weight", "up/as_conv/bias"} <= {t.name for t in rewritten.graph.initializer}
    got = _run(rewritten, x)
    assert got.shape == expected.shape == (1, c_out, 7 * k, 9 * k)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_conv_transpose_that_is_not_a_pixel_shuffle_is_kept():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(2, 2, 3, 3)).astype(np.float32), "w")
    node = helper.make_node(
        "ConvTranspose", ["x", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
    )
    model, n = rewrite_conv_transpose(_model([node], [w], 2, 2))
    assert n == 0
    assert [nd.op_type for nd in model.graph.node] == ["ConvTranspose"]


def test_convolutions_with_few_input_channels_stay_fp32():
    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array(rng.normal(size=(8, 1, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(2, 8, 3, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], name="first", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["h", "w2"], ["y"], name="second", pads=[1, 1, 1, 1]),
    ]
    assert keep_fp32(_model(nodes, [w1, w2], 1, 2)) == ["first"]


def test_quantized_shuffle_takes_its_shape_from_the_int8_tensor(tmp_path):
    """After quantizing, no DequantizeLinear is left only to give the pixel shuffle its shape, and the
    model computes the same."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    rng = np.random.default_rng(3)
    w1 = numpy_helper.from_array(rng.normal(size=(8, 4, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(8, 4, 2, 2)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("ConvTranspose", ["r", "w2"], ["y"], name="up", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    model, _ = rewrite_conv_transpose(_model(nodes, [w1, w2], 4, 4))
    x = rng.normal(size=(1, 4, 12, 10)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": x}])

        def get_next(self):
            return next(self.items, None)

    target = tmp_path / "int8.onnx"
    quantize_static(model, str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    quantized = onnx.load(str(target))
    before = _run(quantized, x)
    assert shapes_from_integers(quantized) == 1
    shape_inputs = [n.input[0] for n in quantized.graph.node if n.op_type == "Shape"]
    dequantized = {n.output[0] for n in quantized.graph.node if n.op_type == "DequantizeLinear"}
    assert shape_inputs and not set(shape_inputs) & dequantized
    np.testing.assert_array_equal(_run(quantized, x), before)
