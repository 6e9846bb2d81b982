"""The packages built from a small U-Net (zip) and a small image-to-value network (folder): valid for
bioimageio.spec, passing bioimageio.core's test_model for every weight format, reproduced by emzoo's
runtime, and carrying their metadata."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from emzoo.io.meta import Image, ImageMeta
from emzoo.package.load import open_model
from emzoo.runtime.predictor import Predictor
from tests.conftest import shared
from tests.packaging.conftest import unet_info

FORMATS = ("onnx", "torchscript", "pytorch_state_dict")


def _descr(source):
    from bioimageio.spec import InvalidDescr, load_description

    descr = load_description(source, perform_io_checks=True)
    assert not isinstance(descr, InvalidDescr), descr.validation_summary.format()
    return descr


@pytest.fixture(scope="module", params=["unet_zip", "counter_folder"])
def package(request):
    return request.getfixturevalue(request.param)


def test_valid_for_bioimageio_spec(package):
    source = package if package.suffix == ".zip" else package / "rdf.yaml"
    descr = _descr(source)
    assert descr.validation_summary.status == "valid-format"
    errors = [e for d in descr.validation_summary.details for e in d.errors]
    assert errors == []
    # ``ensure_dtype float32`` ends the preprocessing (or bioimageio appends a cast to the data type)
    last = descr.inputs[0].preprocessing[-1]
    assert last.id == "ensure_dtype" and last.kwargs.dtype == "float32"
    assert {f for f in ("onnx", "torchscript", "pytorch_state_dict") if getattr(descr.weights, f)} == set(
        FORMATS
    )
    assert descr.weights.onnx.opset_version >= 17
    assert all(a.github_user is None for a in descr.authors)
    assert descr.training_data is not None and descr.training_data.name == "ISBI 2012 membranes"
    assert descr.inputs[0].sample_tensor is not None and descr.outputs[0].sample_tensor is not None
    assert descr.covers and descr.documentation is not None


@pytest.mark.parametrize("weight_format", FORMATS)
def test_bioimageio_core_test_model(package, weight_format):
    from bioimageio.core import test_model

    source = package if package.suffix == ".zip" else package / "rdf.yaml"
    summary = test_model(source, weight_format=weight_format, devices=["cpu"])
    assert summary.status == "passed", summary.format()


@pytest.mark.parametrize("weight_format", FORMATS)
def test_emzoo_runtime_reproduces_test_outputs(package, weight_format):
    pkg = open_model(package)
    spec = pkg.spec
    predictor = Predictor(pkg, weight_format=weight_format, device="cpu")
    inputs = {t.id: np.load(pkg.file(t.test_tensor)) for t in spec.inputs}
    outputs = predictor.run(inputs)
    for t in spec.outputs:
        expected = np.load(pkg.file(t.test_tensor))
        tol = spec.tolerance(weight_format, t.id)
        assert outputs[t.id].shape == expected.shape
        np.testing.assert_allclose(outputs[t.id], expected, rtol=tol.rtol, atol=max(tol.atol, 1e-6))


def test_evaluations_read_back_from_the_zip(unet_zip):
    descr = _descr(unet_zip)
    (evaluation,) = descr.config.bioimageio.evaluations
    assert evaluation.dataset_role == "test" and evaluation.sample_count == 1
    assert evaluation.metrics == ["dice", "adapted_rand_err"]  # abbreviated to 16 characters
    assert evaluation.metrics_long == ["dice", "adapted_rand_error"]
    assert evaluation.results == [[0.61], [0.25]]
    assert "Otsu threshold" in evaluation.results_summary
    config = descr.config.model_extra["emzoo"]
    assert config["evaluation"]["baseline"]["metrics"]["dice"] == 0.52
    assert descr.config.bioimageio.training.training_epochs == 1
    assert descr.attachments and str(descr.attachments[0].source).endswith("evaluation.json")


def test_geometry_statistics_and_tolerance(unet_zip, em_sample):
    descr = _descr(unet_zip)
    y = descr.inputs[0].axes[2]
    assert (y.size.min, y.size.step) == (52, 4)  # 2 * halo + 2**depth
    assert y.scale == 4.0 and y.unit == "nanometer"
    out_y = descr.outputs[0].axes[2]
    assert out_y.halo == 24 and y.size.min - 2 * out_y.halo >= 1
    emzoo = descr.config.model_extra["emzoo"]
    assert emzoo["geometry"] == {"step": 4, "min_size": 52, "halo": 24, "receptive_field": 23}
    stats = emzoo["training_data"]["intensity"]
    assert stats["mean"] == pytest.approx(float(em_sample.mean()), rel=1e-6)
    assert stats["std"] == pytest.approx(float(em_sample.std()), rel=1e-6)
    assert (stats["p1"], stats["p99"]) == tuple(np.percentile(em_sample, [1, 99]))
    assert emzoo["training_data"]["pixel_size"] == {"y": 4.0, "x": 4.0}
    (tol,) = descr.config.bioimageio.reproducibility_tolerance
    assert tol.absolute_tolerance <= 0.01 * float(
        np.load(_member(unet_zip, "test_output_membrane.npy")).max()
    )


def _member(zip_path, name):
    import io

    with zipfile.ZipFile(zip_path) as z:
        return io.BytesIO(z.read(name))


def test_test_output_is_a_plain_forward_pass(unet_zip, unet):
    """What `bioimageio test` compares against: model(preprocessed input), no padding (P9)."""
    from tests.packaging.conftest import torch

    x = np.load(_member(unet_zip, "test_input.npy"))
    expected = np.load(_member(unet_zip, "test_output_membrane.npy"))
    assert x.shape == (1, 1, 128, 128) and expected.shape == (1, 1, 128, 128)
    normalised = (x - x.mean()) / (x.std() + 1e-6)
    with torch.no_grad():
        plain = torch.sigmoid(unet(torch.from_numpy(normalised.astype(np.float32)))).numpy()
    np.testing.assert_allclose(expected, plain, atol=1e-4)


def test_card_and_covers(unet_zip):
    with zipfile.ZipFile(unet_zip) as z:
        names = set(z.namelist())
        card = z.read("README.md").decode()
        cover = z.read("cover_membrane.png")
    assert {"rdf.yaml", "weights.onnx", "weights_torchscript.pt", "weights.pt", "unet.py"} <= names
    assert cover.startswith(b"\x89PNG")
    for heading in (
        "## Task",
        "## Intended data",
        "## Training data and split",
        "## Training settings",
        "## Validation",
        "## Limitations and failure modes",
        "## How to run it",
        "## Citation",
    ):
        assert heading in card
    assert "| dice | 0.61 | 0.52 |" in card
    assert "emzoo predict unet.zip" in card and "bioimageio predict unet.zip" in card


def test_predictor_matches_torch_on_a_real_image(unet_zip, unet):
    from emzoo.io import read_image
    from tests.packaging.conftest import torch

    image = read_image(shared("isbi2012_membranes", "train", "image", "0.png"))
    predictor = Predictor(unet_zip, weight_format="onnx", device="cpu")
    result = predictor.predict(image)["membrane"].data
    data = image.data.astype(np.float32)
    normalised = (data - data.mean()) / (data.std() + 1e-6)
    with torch.no_grad():
        expected = torch.sigmoid(unet(torch.from_numpy(normalised[None, None]))).numpy()[0, 0]
    tol = predictor.spec.tolerance("onnx", "membrane")
    assert result.shape == expected.shape == image.data.shape
    np.testing.assert_allclose(result, expected, rtol=tol.rtol, atol=tol.atol)


def test_image_to_value_runs_in_one_whole_image_call(counter_folder, counter, em_image):
    """Outputs without spatial axes cannot be tiled: the Predictor makes one whole-image call."""
    from tests.packaging.conftest import torch

    assert (counter_folder / "rdf.yaml").is_file()
    predictor = Predictor(counter_folder, device="cpu")
    out = predictor.predict(Image(em_image, ImageMeta(axes="yx", pixel_size={"y": 4.0, "x": 4.0})))
    assert predictor.last_plan is None
    scores = out["scores"]
    assert scores.meta.axes == "c" and scores.data.shape == (3,)
    data = em_image.astype(np.float64)
    lo, hi = np.percentile(data, [1, 99])
    normalised = ((data - lo) / (hi - lo + 1e-6)).astype(np.float32)
    with torch.no_grad():
        expected = counter(torch.from_numpy(normalised[None, None])).numpy()[0]
    np.testing.assert_allclose(scores.data, expected, rtol=1e-3, atol=1e-4)
    descr = _descr(counter_folder / "rdf.yaml")
    assert [a.type for a in descr.outputs[0].axes] == ["batch", "channel"]
    assert [str(n) for n in descr.outputs[0].axes[1].channel_names] == ["count", "score_a", "score_b"]
    assert descr.config.bioimageio.evaluations[0].dataset_role == "independent"


def test_unet_info_is_complete():
    from emzoo.packaging.metadata import problems

    assert problems(unet_info()) == []


def test_image_to_value_with_an_index_axis(tmp_path, em_sample):
    """Outputs ``ci`` (channels x bins) get an index axis of the measured size; bioimageio.core's
    test_model (run by the build, ONNX) and emzoo's whole-image fallback both run them."""
    from emzoo.packaging import BuildOptions, package_module
    from emzoo.packaging.info import TensorInfo
    from tests.packaging.conftest import HERE, counter_info, torch
    from tests.packaging.nets import Histograms

    torch.manual_seed(0)
    info = counter_info(outputs=(TensorInfo("histograms", "ci", ("a", "b"), "two histograms"),))
    out = package_module(
        Histograms().eval(),
        info,
        em_sample,
        tmp_path / "hist.zip",
        architecture=(HERE / "nets.py", "Histograms", {}),
        options=BuildOptions(weight_formats=("onnx", "pytorch_state_dict"), test_size=64),
    )
    descr = _descr(out)
    axis = descr.outputs[0].axes[2]
    assert (axis.type, axis.size) == ("index", 5)
    predictor = Predictor(out, device="cpu")
    result = predictor.predict(Image(em_sample[:100, :90], ImageMeta(axes="yx")))["histograms"]
    assert predictor.last_plan is None
    assert result.meta.axes == "ci" and result.data.shape == (2, 5)
