"""Bad input fails early with a message that names the problem and the fix, and leaves nothing behind."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from emzoo.packaging import BuildOptions, PackagingError, package_module
from emzoo.packaging.export import ExportMismatchError
from emzoo.packaging.info import TensorInfo
from tests.packaging.conftest import UNET_KWARGS, UNET_SOURCE, fake_evaluate, unet_info
from tests.packaging.nets import DivergesInOnnx

FAST = BuildOptions(test_size=96, test_with_bioimageio=False)


@pytest.fixture
def nothing_left(tmp_path, monkeypatch):
    """An output folder; asserts that a failed build leaves in it no package or partial file, and
    no staging folder in (this test's own) temporary directory."""
    out, staging = tmp_path / "out", tmp_path / "staging"
    out.mkdir()
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    yield out
    assert list(out.iterdir()) == []
    assert list(staging.iterdir()) == []


def _package(module, info, sample, out, **kwargs):
    kwargs.setdefault("architecture", (UNET_SOURCE, "UNet", UNET_KWARGS))
    kwargs.setdefault("options", FAST)
    return package_module(module, info, sample, out, **kwargs)


def test_missing_license_and_authors(unet, em_sample, nothing_left):
    with pytest.raises(PackagingError) as err:
        _package(unet, unet_info(license="", authors=()), em_sample, nothing_left / "m.zip")
    message = str(err.value)
    assert "2 problem(s)" in message
    assert "PackagingInfo.license is missing: set an SPDX identifier such as 'MIT'" in message
    assert "PackagingInfo.authors is empty: add at least one {'name': ..., 'affiliation': ...}" in message


def test_every_metadata_problem_is_listed(unet, em_sample, nothing_left):
    info = unet_info(
        name="x/y",
        license="Proprietary-ish",
        cite=({"text": "no link"},),
        pixel_size={"y": 4.0},
        pixel_unit="nm",
    )
    with pytest.raises(PackagingError) as err:
        _package(unet, info, em_sample, nothing_left / "m.zip")
    message = str(err.value)
    for fragment in (
        "PackagingInfo.name='x/y'",
        "'Proprietary-ish' is not an SPDX license identifier",
        "needs a 'doi' or an http(s) 'url'",
        "no positive size for axis 'x'",
        "pixel_unit='nm' is not a unit name bioimage.io knows: use 'nanometer'",
    ):
        assert fragment in message


def test_onnx_divergence_fails_with_both_numbers(em_sample, nothing_left):
    from tests.packaging.conftest import torch

    torch.manual_seed(0)
    with pytest.raises(ExportMismatchError, match=r"max \|difference\| = 1 .*tolerance 0\.000\d+") as err:
        _package(
            DivergesInOnnx().eval(),
            unet_info(outputs=(TensorInfo("membrane", "cyx", ("membrane",)),)),
            em_sample,
            nothing_left / "m.zip",
            architecture=None,
            options=BuildOptions(
                weight_formats=("torchscript", "onnx"), test_size=96, test_with_bioimageio=False
            ),
        )
    assert "the onnx export differs from the PyTorch module on a real input of shape (1, 1, 96, 96)" in str(
        err.value
    )


def test_sample_with_the_wrong_channels(unet, em_sample, nothing_left):
    rgb = np.stack([em_sample] * 3)
    with pytest.raises(
        PackagingError, match=r"the sample image has 3 channel\(s\) \(shape \(3, 192, 192\).*declares 1"
    ):
        _package(unet, unet_info(), rgb, nothing_left / "m.zip")


def test_sample_with_the_wrong_dimensions(unet, em_sample, nothing_left):
    with pytest.raises(
        PackagingError, match=r"has shape \(2, 2, 192, 192\) \(4D\), but input 'raw' has axes 'cyx'"
    ):
        _package(unet, unet_info(), np.stack([np.stack([em_sample] * 2)] * 2), nothing_left / "m.zip")


def test_sample_smaller_than_the_network_accepts(unet, em_sample, nothing_left):
    with pytest.raises(
        PackagingError, match=r"is 40 px along y, but the network needs at least 52 px .*larger sample"
    ):
        _package(unet, unet_info(), em_sample[:40, :40], nothing_left / "m.zip")


def test_test_size_below_the_minimum(unet, em_sample, nothing_left):
    options = BuildOptions(test_size=32, test_with_bioimageio=False)
    with pytest.raises(
        PackagingError, match=r"test_size=32 is below the smallest input .* use test_size >= 52"
    ):
        _package(unet, unet_info(), em_sample, nothing_left / "m.zip", options=options)


def test_output_description_that_does_not_fit_the_network(unet, em_sample, nothing_left):
    info = unet_info(outputs=(TensorInfo("membrane", "cyx", ("membrane", "boundary")),))
    with pytest.raises(
        PackagingError, match=r"output 'membrane' of the network has shape \(1, 1, 96, 96\).*2 channel_names"
    ):
        _package(unet, info, em_sample, nothing_left / "m.zip")


def test_invalid_processing_step(unet, em_sample, nothing_left):
    info = unet_info(
        outputs=(
            TensorInfo(
                "membrane", "cyx", ("membrane",), processing=({"id": "sigmoid", "kwargs": {"gain": 2}},)
            ),
        )
    )
    with pytest.raises(
        PackagingError, match=r"postprocessing step 'sigmoid' .* is not valid bioimage\.io spec 0\.5"
    ):
        _package(unet, info, em_sample, nothing_left / "m.zip")


def test_evaluation_without_a_dataset_address(unet, em_sample, nothing_left):
    info = unet_info(
        training_data={"name": "in-house stack", "source": "our microscope"},
        cite=({"text": "x", "url": "https://example.org/x"},),
    )
    with pytest.raises(PackagingError, match="the evaluation needs an http\\(s\\) address of its data set"):
        _package(unet, info, em_sample, nothing_left / "m.zip", evaluate=fake_evaluate)


def test_existing_output_is_kept(unet, em_sample, tmp_path):
    out = tmp_path / "m.zip"
    out.write_bytes(b"an older package")
    with pytest.raises(PackagingError, match="already exists: choose another output or overwrite it"):
        _package(unet, unet_info(), em_sample, out)
    assert out.read_bytes() == b"an older package"


def test_failure_after_saving_leaves_no_partial_package(unet, em_sample, nothing_left, monkeypatch):
    """The package is written to a hidden partial path and renamed only after its checks pass."""
    import emzoo.packaging.save as save

    seen = []

    def failing_core_test(source, formats, output):
        seen.append(Path(source))
        assert Path(source).is_file() and Path(source).name.startswith(".m.zip.partial-")
        raise PackagingError("bioimageio.core's test_model fails (simulated)")

    monkeypatch.setattr(save, "core_test", failing_core_test)
    options = BuildOptions(test_size=96, test_with_bioimageio=True)
    with pytest.raises(PackagingError, match="simulated"):
        _package(unet, unet_info(), em_sample, nothing_left / "m.zip", options=options)
    assert len(seen) == 1 and not seen[0].exists()
