"""The three real bioimage.io packages (spec 0.4.9 and 0.5.4; ONNX, TorchScript, state dict)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from emzoo.cli import main
from emzoo.package.load import open_model
from emzoo.runtime import processing
from emzoo.runtime.predictor import Predictor
from emzoo.runtime.settings import TileSettings
from tests.conftest import shared

PACKAGES = [
    "unet2d_nuclei_broad_v0_4_9_offline.zip",
    "unet2d_nuclei_broad_v0_5_4_offline.zip",
    "unet2d_multi_tensor_v0_5_4.zip",
]


@pytest.fixture(params=PACKAGES)
def package_zip(request):
    return shared("bioimageio_models", request.param)


def test_validate_and_test_pass(package_zip):
    runner = CliRunner()
    result = runner.invoke(main, ["validate", str(package_zip)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("valid")
    result = runner.invoke(main, ["test", str(package_zip)])
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.output
    assert "bioimageio.core test_model" in result.output and "reproduce test outputs (emzoo)" in result.output


def test_spec_04_is_converted_once_to_05():
    pkg = open_model(shared("bioimageio_models", PACKAGES[0]))
    assert pkg.spec.format_version == "0.4.9"
    (raw,) = pkg.spec.inputs
    assert [a.type for a in raw.axes] == ["batch", "channel", "space", "space"]
    assert [op.id for op in raw.processing] == ["ensure_dtype", "zero_mean_unit_variance", "ensure_dtype"]
    assert pkg.spec.outputs[0].axes[2].halo == 32


def test_predict_cli_reproduces_test_outputs(package_zip, tmp_path):
    pkg = open_model(package_zip)
    spec = pkg.spec
    args = ["predict", str(package_zip), "-o", str(tmp_path / "out"), "-q"]
    if len(spec.inputs) == 1:
        args.append(str(pkg.file(spec.inputs[0].test_tensor)))
    else:
        args += [a for t in spec.inputs for a in ("--input", f"{t.id}={pkg.file(t.test_tensor)}")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    stem = pkg.file(spec.inputs[0].test_tensor).stem
    for t in spec.outputs:
        written = tifffile.imread(tmp_path / "out" / f"{stem}_{t.id}.tif")
        expected = np.load(pkg.file(t.test_tensor))[0, 0]
        tol = spec.tolerance(spec.weight_formats()[0], t.id)
        np.testing.assert_allclose(written, expected, rtol=tol.rtol, atol=tol.atol)


def test_tiled_prediction_equals_whole_image_prediction():
    """An image 4x a tile per axis (16 tiles and more); the halo comes from the receptive-field probe."""
    pkg = open_model(shared("bioimageio_models", "unet2d_multi_tensor_v0_5_4.zip"))
    test = np.load(pkg.file(pkg.spec.inputs[0].test_tensor))
    image = np.tile(test, (1, 1, 4, 4))  # 1024 x 1024
    inputs = {t.id: image for t in pkg.spec.inputs}
    predictor = Predictor(pkg, weight_format="torchscript", settings=TileSettings(tile=(256,)))
    tiled = predictor.run(inputs)
    plan = predictor.last_plan
    assert plan is not None and plan.n_tiles >= 16
    assert all(a.blend == 0 and a.halo >= r for a, r in zip(plan.axes, plan.receptive_field, strict=True))
    whole_inputs = [
        processing.apply(t.processing, processing.Tensor(image, t.axis_ids)) for t in pkg.spec.inputs
    ]
    whole = predictor.backend.run(whole_inputs)
    for t, w in zip(pkg.spec.outputs, whole, strict=True):
        assert np.abs(tiled[t.id] - w).max() < 1e-4


def test_blending_removes_seams_when_the_halo_is_too_small():
    pkg = open_model(shared("bioimageio_models", "unet2d_multi_tensor_v0_5_4.zip"))
    image = np.tile(np.load(pkg.file(pkg.spec.inputs[0].test_tensor)), (1, 1, 3, 3))
    inputs = {t.id: image for t in pkg.spec.inputs}
    exact = Predictor(pkg, weight_format="torchscript").run(inputs)["output0"]
    errors = {}
    for blend in (0, 24):
        p = Predictor(
            pkg, weight_format="torchscript", settings=TileSettings(tile=(128,), halo=4, blend=blend)
        )
        errors[blend] = np.abs(p.run(inputs)["output0"] - exact)
    assert errors[24].max() < 0.5 * errors[0].max()
    assert errors[24].mean() < 0.5 * errors[0].mean()
