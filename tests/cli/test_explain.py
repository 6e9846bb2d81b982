"""``emzoo explain``: Grad-CAM maps of a small image-to-value package (built once per module)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="emzoo explain needs torch (pip install -e '.[train]')")
pytest.importorskip("onnxruntime", reason="packaging checks the ONNX export with onnxruntime")

from click.testing import CliRunner  # noqa: E402

from emzoo.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def counter_package(tmp_path_factory):
    """The packaging tests' image-to-value network (three scores per image) in all three formats."""
    from emzoo.packaging import BuildOptions, package_module
    from tests.packaging.conftest import HERE, counter_info, synthetic_em
    from tests.packaging.nets import Counter

    torch.manual_seed(0)
    return package_module(
        Counter().eval(),
        counter_info(),
        synthetic_em(192),
        tmp_path_factory.mktemp("explain") / "em-counter",
        architecture=(HERE / "nets.py", "Counter", {}),
        options=BuildOptions(test_size=96, test_with_bioimageio=False),
    )


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    import tifffile

    from tests.packaging.conftest import synthetic_em

    path = tmp_path_factory.mktemp("images") / "cells.tif"
    tifffile.imwrite(path, synthetic_em(150, seed=4))
    return path


def explain(*args: str):
    return CliRunner().invoke(main, ["explain", *map(str, args)])


@pytest.mark.parametrize("weights", ["pytorch_state_dict", "torchscript"])
def test_writes_the_map_and_the_overlay(counter_package, image_file, tmp_path, weights):
    import tifffile
    from PIL import Image

    result = explain(counter_package, image_file, "-o", tmp_path, "--weights", weights)
    assert result.exit_code == 0, result.output
    assert f"({weights})" in result.output and "scores[" in result.output
    cam = tifffile.imread(tmp_path / "cells_gradcam.tif")
    assert cam.shape == (150, 150) and cam.dtype == np.float32
    assert cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    assert np.asarray(Image.open(tmp_path / "cells_gradcam.png")).shape == (150, 150, 3)


def test_both_torch_formats_give_the_same_map(counter_package, image_file):
    from emzoo.io import read_image
    from emzoo.tasks.explain import Explainer

    image = read_image(image_file)
    eager = Explainer(counter_package, weight_format="pytorch_state_dict").explain(image, channel="count")
    script = Explainer(counter_package, weight_format="torchscript").explain(image, channel="count")
    assert eager.target == script.target == "count" and eager.value == pytest.approx(script.value, abs=1e-5)
    assert np.allclose(eager.cam, script.cam, atol=1e-4)


def test_channel_by_name_and_skip(counter_package, image_file, tmp_path):
    result = explain(counter_package, image_file, "-o", tmp_path, "--channel", "score_a")
    assert result.exit_code == 0, result.output
    assert "scores[score_a] = " in result.output and "features.4" in result.output
    again = explain(counter_package, image_file, "-o", tmp_path)
    assert again.exit_code == 0 and "skipped" in again.output
    wrong = explain(counter_package, image_file, "-o", tmp_path, "--channel", "area", "--overwrite")
    assert wrong.exit_code == 2 and "has channels count, score_a, score_b" in wrong.output


def test_onnx_weights_are_refused_with_the_reason(counter_package, image_file, tmp_path):
    result = explain(counter_package, image_file, "-o", tmp_path, "--weights", "onnx")
    assert result.exit_code == 2
    assert "ONNX weights carry no gradients" in result.output
    assert not list(tmp_path.iterdir())


def test_onnx_only_package_is_refused(counter_package):
    from emzoo.errors import UsageError
    from emzoo.package.load import open_model
    from emzoo.tasks.explain import Explainer

    package = open_model(counter_package)
    onnx_only = replace(package, spec=replace(package.spec, weights={"onnx": package.spec.weights["onnx"]}))
    with pytest.raises(UsageError, match="ONNX weights do not carry"):
        Explainer(onnx_only)


def _with_image_output(package, emzoo: dict):
    from emzoo.package.spec import Axis, TensorSpec

    axes = (Axis("batch", "batch"), Axis("channel", "channel", channel_names=("d",)))
    axes += (Axis("y", "space"), Axis("x", "space"))
    spec = replace(package.spec, outputs=(TensorSpec("density", axes),), emzoo=emzoo)
    return replace(package, spec=spec)


def test_density_map_models_are_their_own_explanation(counter_package):
    from emzoo.errors import UsageError
    from emzoo.package.load import open_model
    from emzoo.tasks.explain import Explainer

    package = open_model(counter_package)
    with pytest.raises(UsageError, match="its own explanation"):
        Explainer(_with_image_output(package, {"counting": {"output": "density"}}))
    with pytest.raises(UsageError, match="every output of this model is an image"):
        Explainer(_with_image_output(package, {}))


def test_no_inputs_is_a_usage_error(counter_package):
    result = explain(counter_package)
    assert result.exit_code == 2 and "at least one INPUT" in result.output
