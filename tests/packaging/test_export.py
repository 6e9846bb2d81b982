"""ONNX / TorchScript / state-dict export and the parity check against PyTorch."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from emzoo.packaging.export import (
    Architecture,
    ExportMismatchError,
    PackagingError,
    export_weights,
    forward,
)
from tests.packaging.conftest import UNET_KWARGS, UNET_SOURCE
from tests.packaging.nets import DivergesInOnnx, ShapeDependent


@pytest.fixture
def x(rng):
    return rng.standard_normal((1, 1, 64, 64)).astype(np.float32)


def test_unet_exports_agree_and_keep_dynamic_axes(unet, x, tmp_path, rng):
    arch = Architecture(UNET_SOURCE, "UNet", UNET_KWARGS)
    exported = export_weights(unet, x, tmp_path, architecture=arch, check_inputs=[[np.concatenate([x, x])]])
    assert set(exported.files) == {"onnx", "torchscript", "pytorch_state_dict"}
    assert exported.torchscript_method == "script"
    assert exported.architecture.source == tmp_path / "unet.py" and exported.architecture.source.is_file()
    assert len(exported.checks) == 6 and all(c.passed for c in exported.checks)
    model = onnx.load(str(exported.files["onnx"]))
    assert model.opset_import[0].version >= 17
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "unet.py",
        "weights.onnx",
        "weights.pt",
        "weights_torchscript.pt",
    ]
    # dynamic batch and spatial axes: another batch size and image size than the export's
    other = rng.standard_normal((3, 1, 96, 80)).astype(np.float32)
    session = ort.InferenceSession(str(exported.files["onnx"]), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"input": other})
    np.testing.assert_allclose(onnx_out, forward(unet, [other])[0], atol=1e-4, rtol=1e-4)
    scripted = torch.jit.load(str(exported.files["torchscript"]))
    np.testing.assert_allclose(forward(scripted, [other])[0], forward(unet, [other])[0], atol=1e-5)


def test_export_leaves_the_module_as_it_was(unet, x, tmp_path):
    unet.train()
    try:
        export_weights(unet, x, tmp_path, formats=("onnx",))
        assert unet.training
    finally:
        unet.eval()


def test_tracing_is_checked_on_a_second_size(x, tmp_path, rng):
    torch.manual_seed(0)
    module = ShapeDependent().eval()
    other = rng.standard_normal((1, 1, 32, 32)).astype(np.float32)
    with pytest.raises(ExportMismatchError, match=r"torchscript export differs .* max \|difference\| = "):
        export_weights(
            module, x, tmp_path, formats=("torchscript",), torchscript="trace", check_inputs=[[other]]
        )
    # scripted, the branch survives and both sizes agree
    exported = export_weights(
        module, x, tmp_path, formats=("torchscript",), torchscript="script", check_inputs=[[other]]
    )
    assert exported.torchscript_method == "script"


def test_onnx_divergence_reports_difference_and_tolerance(x, tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ExportMismatchError) as err:
        export_weights(DivergesInOnnx().eval(), x, tmp_path, formats=("onnx",))
    message = str(err.value)
    assert "onnx export differs from the PyTorch module" in message
    assert "max |difference| = 1 " in message  # the injected +1
    assert re.search(r"tolerance 0\.000\d+ \(atol 0\.0001 \+ rtol 0\.0001 x max\|output\| ", message)
    assert "leave onnx out of the weight formats" in message


def test_state_dict_needs_a_self_contained_architecture(unet, x, tmp_path):
    with pytest.raises(PackagingError, match="pytorch_state_dict weights need the architecture"):
        export_weights(unet, x, tmp_path / "a")
    source = tmp_path / "net.py"
    source.write_text("import not_a_module_anywhere\n")
    with pytest.raises(PackagingError, match=r"does not import on its own .*must import nothing but torch"):
        export_weights(unet, x, tmp_path / "b", architecture=Architecture(source, "UNet", UNET_KWARGS))


def test_unknown_format_and_old_opset(unet, x, tmp_path):
    with pytest.raises(PackagingError, match="unknown weight format"):
        export_weights(unet, x, tmp_path, formats=("tensorflow",))
    with pytest.raises(PackagingError, match="opset 11 is too old"):
        export_weights(unet, x, tmp_path, formats=("onnx",), opset=11)
