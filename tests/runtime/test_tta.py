"""Test-time augmentation: unchanged outputs for a model that is flip- and rotation-equivariant, 8 or
4 transforms as the blocks and pixels allow, and the CLI switch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from emzoo.io.meta import Image, ImageMeta
from emzoo.runtime.predictor import Predictor
from emzoo.runtime.settings import TileSettings
from tests.tiny_packages import tiny_info


@pytest.fixture(scope="module")
def equivariant_package(tmp_path_factory):
    """A tiny U-Net whose every kernel is symmetric under the square's 8 symmetries: the whole network
    is then equivariant to flips and 90-degree turns (on sizes that its poolings divide)."""
    torch = pytest.importorskip("torch", reason="building the test package needs torch")
    from emzoo.architectures.unet import UNet
    from emzoo.packaging import BuildOptions, package_module

    torch.manual_seed(0)
    net = UNet(depth=2, features=4)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                w = module.weight
                copies = [
                    torch.rot90(v, k, dims=(2, 3)) for v in (w, torch.flip(w, dims=(3,))) for k in range(4)
                ]
                module.weight.copy_(torch.stack(copies).mean(0))
    pre = ({"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},)
    info = tiny_info("symmetric unet2d", "cyx", pre)
    sample = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    options = BuildOptions(test_with_bioimageio=False, test_size=64, weight_formats=("onnx", "torchscript"))
    folder = tmp_path_factory.mktemp("symmetric")
    return package_module(net, info, sample, folder / "symmetric.zip", options=options)


def _image(shape=(200, 168), pixel=(1.0, 1.0)):
    data = np.random.default_rng(1).random(shape).astype(np.float32)
    return Image(data, ImageMeta(axes="yx", pixel_size={"y": pixel[0], "x": pixel[1]}, unit="nm"))


def test_an_equivariant_model_gives_the_same_output_with_tta(equivariant_package):
    image = _image()
    plain = Predictor(equivariant_package, settings=TileSettings(tile=(64, 64))).predict(image)
    augmented = Predictor(equivariant_package, settings=TileSettings(tile=(64, 64), tta=True)).predict(image)
    a, b = plain["prob"].data, augmented["prob"].data
    assert a.shape == b.shape == image.data.shape
    np.testing.assert_allclose(b, a, atol=1e-5)


class Calls:
    """Counts the network calls of a predictor (the backend itself still runs)."""

    def __init__(self, predictor):
        self.n, self.run = 0, predictor.backend.run
        predictor.backend.run = self

    def __call__(self, arrays):
        self.n += 1
        return self.run(arrays)


@pytest.mark.parametrize(
    ("tile", "pixel", "per_block"), [((64, 64), (1, 1), 8), ((64, 96), (1, 1), 4), ((64, 64), (1, 2), 4)]
)
def test_eight_transforms_on_square_blocks_and_pixels_else_four(tiny_unet2d, tile, pixel, per_block):
    image = _image(pixel=pixel)
    plain = Predictor(tiny_unet2d, settings=TileSettings(tile=tile, batch_size=1))
    augmented = Predictor(tiny_unet2d, settings=TileSettings(tile=tile, batch_size=1, tta=True))
    for p in (plain, augmented):  # the first run also probes the receptive field
        p.predict(image)
    calls, tta_calls = Calls(plain), Calls(augmented)
    reference = plain.predict(image)["prob"].data
    out = augmented.predict(image)["prob"].data
    assert tta_calls.n == per_block * calls.n
    # a random network is not equivariant: the average differs, but stays a probability map of the same size
    assert out.shape == reference.shape and not np.allclose(out, reference, atol=1e-4)
    assert np.all((out >= 0) & (out <= 1))


def test_the_package_can_ask_for_tta_and_the_cli_overrides_it(tiny_unet2d, tmp_path):
    predictor = Predictor(tiny_unet2d)
    assert predictor.tta is False
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "a.tif", _image().data)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "emzoo",
            "predict",
            str(tiny_unet2d),
            str(tmp_path / "a.tif"),
            "-o",
            str(tmp_path / "o"),
            "--tta",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "test-time augmentation" in done.stdout + done.stderr
    assert (tmp_path / "o" / "a_prob.tif").is_file()
