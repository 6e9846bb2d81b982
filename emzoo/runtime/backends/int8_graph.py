"""Prepare an fp32 ONNX graph for int8 quantization on onnxruntime's CPU provider.

onnxruntime's quantization tools quantize what its kernels can run in int8; two patterns common in
U-Nets fall outside, and this module rewrites them (exactly) before ``quantize_static`` sees the graph:

- ``ConvTranspose`` with kernel = stride (the U-Net's 2x up-sampling): the CPU provider has no int8
  ConvTranspose kernel, so a quantized model runs it in fp32 between a DequantizeLinear and a
  QuantizeLinear. Such a ConvTranspose is exactly a 1x1 ``Conv`` to ``k * k * C_out`` channels
  followed by a pixel shuffle, and the shuffle is written as Transpose/Reshape in channels-last
  order, not as ``DepthToSpace``: onnxruntime runs its int8 convolutions channels-last, and
  ``DepthToSpace`` and the ``Concat`` after it exist only channels-first there, so each up-sampling
  cost four layout transposes (measured on the membrane U-Net, 688 px block, 1 thread: 90 ms with
  DepthToSpace, 74 ms with the channels-last shuffle; fp32 193 ms). onnxruntime offers no such
  rewrite (its graph optimisers keep ConvTranspose), hence this code. After quantizing,
  :func:`shapes_from_integers` lets the shuffle's ``Shape`` read the int8 tensor, so that no fp32
  copy of it is made just for its shape.
- Convolutions with very few input channels (the first layer of a one-channel EM image): their int8
  kernel cannot fill the vector units and is slower than fp32 (measured on the membrane U-Net's first
  3x3 convolution, 1 -> 16 channels, 768 px: 25 ms int8 vs < 15 ms fp32); :func:`keep_fp32` names
  them so that they stay fp32.

Example:
    >>> import numpy as np, onnx
    >>> from onnx import helper, numpy_helper
    >>> w = numpy_helper.from_array(np.ones((2, 3, 2, 2), np.float32), "w")
    >>> node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    >>> graph = helper.make_graph([node], "g",
    ...     [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 4, 4])],
    ...     [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 8, 8])], [w])
    >>> model, rewritten = rewrite_conv_transpose(helper.make_model(graph))
    >>> rewritten, [n.op_type for n in model.graph.node][:4]
    (1, ['Conv', 'Transpose', 'Reshape', 'Transpose'])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

FEW_INPUT_CHANNELS = 4  # convolutions with fewer input channels (per group) stay fp32


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _as_conv_and_shuffle(
    node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]] | None:
    """The 1x1 Conv + channels-last pixel shuffle equal to ``node``, with their constants; None where not
    exact."""
    from onnx import helper, numpy_helper

    attrs = _attributes(node)
    kernel, strides = list(attrs.get("kernel_shape", [])), list(attrs.get("strides", []))
    if (
        len(kernel) != 2
        or kernel != strides
        or kernel[0] != kernel[1]
        or attrs.get("group", 1) != 1
        or any(attrs.get("pads", []))
        or any(attrs.get("output_padding", []))
        or "output_shape" in attrs
        or any(d != 1 for d in attrs.get("dilations", []))
        or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
        or node.input[1] not in initializers
        or (len(node.input) > 2 and node.input[2] and node.input[2] not in initializers)
    ):
        return None
    weight = numpy_helper.to_array(initializers[node.input[1]])  # (C_in, C_out, k, k)
    c_in, c_out, k, _ = weight.shape
    if len(node.input) > 2 and node.input[2]:
        bias = numpy_helper.to_array(initializers[node.input[2]])
    else:
        bias = np.zeros(c_out, weight.dtype)
    # channel (a * k + b) * C_out + o of the 1x1 Conv becomes pixel (k * i + a, k * j + b) of channel o
    conv_weight = weight.transpose(2, 3, 1, 0).reshape(k * k * c_out, c_in, 1, 1)
    prefix = node.name or node.output[0]

    def name(part: str) -> str:
        return f"{prefix}/as_conv/{part}"

    constants = {
        "weight": np.ascontiguousarray(conv_weight),
        "bias": np.tile(bias, k * k),
        "rows": np.array([0, 0, 0, k, k * c_out], np.int64),  # (N, H, W, a, (b, o))
        "w_axis": np.array([2], np.int64),
        "k": np.array([k], np.int64),
        "head": np.array([0, -1], np.int64),
        "channels": np.array([c_out], np.int64),
    }
    tensors = [numpy_helper.from_array(value, name(key)) for key, value in constants.items()]
    # channels last: (N, H, W, a, (b, o)) -> (N, H, a, W, (b, o)) -> (N, H * k, W * k, o)
    nodes = [
        helper.make_node("Conv", [node.input[0], name("weight"), name("bias")], [name("out")],
                         name=name("conv"), kernel_shape=[1, 1]),
        helper.make_node("Transpose", [name("out")], [name("last")], perm=[0, 2, 3, 1], name=name("nhwc")),
        helper.make_node("Reshape", [name("last"), name("rows")], [name("split")], name=name("split")),
        helper.make_node("Transpose", [name("split")], [name("moved")], perm=[0, 1, 3, 2, 4],
                         name=name("shuffle")),
        helper.make_node("Shape", [name("last")], [name("dims")], name=name("dims")),  # any opset
        helper.make_node("Gather", [name("dims"), name("w_axis")], [name("width")], name=name("width")),
        helper.make_node("Mul", [name("width"), name("k")], [name("wide")], name=name("wide")),
        helper.make_node("Concat", [name("head"), name("wide"), name("channels")], [name("shape")], axis=0,
                         name=name("shape")),
        helper.make_node("Reshape", [name("moved"), name("shape")], [name("merged")], name=name("merge")),
        helper.make_node("Transpose", [name("merged")], list(node.output), perm=[0, 3, 1, 2],
                         name=name("nchw")),
    ]  # fmt: skip
    return nodes, tensors


def rewrite_conv_transpose(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """``model`` with every kernel = stride ConvTranspose as Conv 1x1 + pixel shuffle, and how many."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    rewritten = 0
    for node in graph.node:
        replacement = _as_conv_and_shuffle(node, initializers) if node.op_type == "ConvTranspose" else None
        if replacement is None:
            nodes.append(node)
            continue
        new_nodes, tensors = replacement
        nodes += new_nodes
        graph.initializer.extend(tensors)
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {name for node in graph.node for name in node.input}
        kept = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return model, rewritten


def keep_fp32(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv nodes whose int8 kernel would be slower than fp32 (few input channels)."""
    initializers = {t.name: t.dims for t in model.graph.initializer}
    slow = []
    for node in model.graph.node:
        dims = initializers.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if dims is not None and len(dims) == 4 and dims[1] < FEW_INPUT_CHANNELS and node.name:
            slow.append(node.name)
    return slow


def shapes_from_integers(model: onnx.ModelProto) -> int:
    """Let every ``Shape`` of a DequantizeLinear's output read its int8 input (the same shape), and drop
    the DequantizeLinear nodes left unused; returns how many Shapes were moved."""
    graph = model.graph
    source = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    moved = 0
    for node in graph.node:
        if node.op_type == "Shape" and node.input[0] in source:
            node.input[0] = source[node.input[0]]
            moved += 1
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [n for n in graph.node if n.op_type != "DequantizeLinear" or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(kept)
    return moved
