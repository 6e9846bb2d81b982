"""Tiny U-Net packages with parameterized input sizes, built once per test session.

Built with :func:`emzoo.packaging.package_module` from :class:`emzoo.architectures.unet.UNet` (random
weights, seed 0): ``tiny_unet2d`` (``cyx``, min 52 + 4n px, ``scale_range`` 1-99 % percentile
normalisation, sigmoid output ``prob``) and ``tiny_unet3d`` (``czyx``, zero-mean/unit-variance). Other
test folders use them through :func:`tiny_package` (the CLI tests import the fixtures from here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

_AUTHOR = ({"name": "emzoo tests"},)


def tiny_info(name: str, axes: str, pre: tuple[dict, ...]):
    """The description of a random-weights test U-Net with ``axes``, input preprocessing ``pre`` and a
    sigmoid output ``prob``."""
    from emzoo.packaging.info import PackagingInfo, TensorInfo

    spatial = axes.replace("c", "")
    return PackagingInfo(
        name=name,
        description=f"{name}: random weights, for tests only",
        task="semantic segmentation",
        inputs=(TensorInfo(id="raw", axes=axes, channel_names=("raw",), processing=pre),),
        outputs=(
            TensorInfo(
                id="prob",
                axes=axes,
                channel_names=("fg",),
                processing=({"id": "sigmoid", "kwargs": {}},),
            ),
        ),
        authors=_AUTHOR,
        license="MIT",
        cite=({"text": "emzoo tests", "doi": "10.5281/zenodo.1"},),
        tags=("test",),
        pixel_size=dict.fromkeys(spatial, 1.0),
        pixel_unit="nanometer",
        training_data={"name": "random", "source": "synthetic", "license": "MIT", "split": "none"},
        intended_use="tests of the runtime",
        limitations="random weights: its outputs mean nothing",
    )


def tiny_package(folder: Path, dims: int) -> Path:
    """Build (once per folder) a tiny 2D or 3D U-Net package zip; skips when packaging cannot run."""
    target = folder / f"tiny_unet{dims}d.zip"
    if target.is_file():
        return target
    try:
        import torch

        from emzoo.architectures.unet import UNet
        from emzoo.packaging import BuildOptions, package_module
    except ImportError as e:
        pytest.skip(f"building the tiny test package needs torch and emzoo.packaging ({e})")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if dims == 2:
        net = UNet(depth=2, features=4)
        pre = (
            {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
            {
                "id": "scale_range",
                "kwargs": {"axes": ["channel", "y", "x"], "min_percentile": 1.0, "max_percentile": 99.0},
            },
        )
        info, sample, size = tiny_info("tiny unet2d", "cyx", pre), rng.integers(0, 255, (128, 128)), 64
    else:
        net = UNet(depth=1, features=2, dims=3)
        pre = (
            {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
            {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["channel", "z", "y", "x"]}},
        )
        info, sample, size = tiny_info("tiny unet3d", "czyx", pre), rng.integers(0, 255, (32, 32, 32)), 24
    options = BuildOptions(test_with_bioimageio=False, test_size=size, weight_formats=("onnx", "torchscript"))
    folder.mkdir(parents=True, exist_ok=True)
    return package_module(net, info, sample.astype(np.uint8), target, options=options)


@pytest.fixture(scope="session")
def tiny_unet2d(tmp_path_factory) -> Path:
    return tiny_package(tmp_path_factory.getbasetemp() / "tiny-models", 2)


@pytest.fixture(scope="session")
def tiny_unet3d(tmp_path_factory) -> Path:
    return tiny_package(tmp_path_factory.getbasetemp() / "tiny-models", 3)


@pytest.fixture(scope="session")
def predictor2d(tiny_unet2d):
    from emzoo.runtime.predictor import Predictor

    return Predictor(tiny_unet2d, device="cpu")


@pytest.fixture(scope="session")
def predictor3d(tiny_unet3d):
    from emzoo.runtime.predictor import Predictor

    return Predictor(tiny_unet3d, device="cpu")
