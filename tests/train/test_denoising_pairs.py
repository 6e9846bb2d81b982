"""Neighbor2Neighbor in the denoising use case (``method=ne2ne``): the neighbour sub-sampler, its loss
and fixed validation pairs, the training network's state dict, resize up-sampling; a tiny
Neighbor2Neighbor run trained and packaged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emzoo.errors import UsageError
from emzoo.train.discovery import get_usecase
from emzoo.train.params import load_param_file, resolve_params
from emzoo.train.trainer import train
from tests.train.usecases import sibling


@pytest.fixture(scope="module")
def uc():
    return get_usecase("denoising")


@pytest.fixture(scope="module")
def mod(uc):
    return {m: sibling(uc, m) for m in ("pairs", "network", "loss", "data")}


@pytest.fixture(scope="module")
def params(uc):
    return resolve_params(load_param_file(uc.params_file), {**uc.tiny_params, "method": "ne2ne"})


def test_sub_images_take_two_neighbours_of_every_cell(mod):
    pairs = mod["pairs"]
    x = torch.arange(2 * 8 * 10, dtype=torch.float32).reshape(2, 1, 8, 10)  # all values distinct
    first, second = pairs.draw_pairs(x, torch.Generator().manual_seed(0))
    g1, g2 = pairs.sub_image(x, first), pairs.sub_image(x, second)
    assert g1.shape == g2.shape == (2, 1, 4, 5)
    for b in range(2):
        for i in range(4):
            for j in range(5):
                cell = x[b, 0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
                (y1, x1), (y2, x2) = (torch.nonzero(cell == g[b, 0, i, j])[0].tolist() for g in (g1, g2))
                assert abs(y1 - y2) + abs(x1 - x2) == 1  # horizontal or vertical neighbours, not diagonal


def test_loss_is_reconstruction_plus_gamma_times_regulariser(mod):
    loss = mod["loss"].NeighbourLoss(gamma=2.0)
    denoised, g2, gap = torch.full((1, 1, 4, 4), 3.0), torch.full((1, 1, 4, 4), 1.0), torch.ones(1, 1, 4, 4)
    value = loss(torch.cat([denoised, g2, gap], dim=1), torch.zeros(1, 2, 8, 8))
    assert float(value) == pytest.approx(2.0**2 + 2.0 * (2.0 - 1.0) ** 2)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 1, 1] = 1
    out = torch.zeros(1, 1, 4, 4)
    out[..., 1, 1] = 3.0  # one channel: the validation's loss, on the held-out pixels
    assert float(loss(out, torch.cat([torch.zeros(1, 1, 4, 4), mask], dim=1))) == pytest.approx(9.0)


def test_training_network_holds_the_packaged_state_dict(mod):
    net = mod["pairs"].TrainingNet(depth=2, features=4, method="ne2ne")
    packaged = mod["network"].GreyLevelUNet(depth=2, features=4)
    packaged.load_state_dict(net.state_dict())  # the same keys and shapes
    x = torch.randn(3, 1, 16, 16)
    net.train()
    out = net(x)
    assert out.shape == (3, 3, 8, 8)
    # channel 1 is g2: pixels of the input
    assert torch.isin(out[:, 1], x).all()
    net.eval()
    torch.testing.assert_close(net(x), net.unet(x))


def test_validation_pairs_are_fixed_and_scored_against_the_second_image(uc, mod, params, tmp_path):
    tiny_dir = uc.make_tiny_data(tmp_path)
    sets = uc.datasets(tiny_dir, params)
    x, y = sets["train"][0]
    assert x.shape == (1, 32, 32) and float(y[1].sum()) == 0  # whole pieces, no blind spots
    val = sets["val"]
    (vx, vy), (vx2, vy2) = val[0], uc.datasets(tiny_dir, params)["val"][0]
    assert vx.shape == (2, 32, 32) and vy.shape == (2, 16, 16) and bool((vy[1] == 1).all())
    assert torch.equal(vx, vx2) and torch.equal(vy, vy2)
    net = mod["pairs"].TrainingNet(depth=2, features=4, method="ne2ne").eval()
    prediction = net(vx[None])[0].detach().numpy()
    assert prediction.shape == (1, 16, 16)
    metrics = uc.metrics(prediction, vy.numpy())
    assert set(metrics) == {"masked_mse"}
    assert metrics["masked_mse"] == pytest.approx(float(np.mean((prediction[0] - vy[0].numpy()) ** 2)))


def test_ne2ne_needs_pieces_whose_halves_fit_the_network(uc, params):
    with pytest.raises(UsageError, match=r"multiple of 2\*\*\(depth\+1\) = 8 for method ne2ne"):
        uc.check_params({**params, "patch_size": 36, "val_crop": 36, "depth": 2})
    with pytest.raises(UsageError, match="method must be one of n2v, ne2ne"):
        uc.check_params({**params, "method": "n2s"})


def test_resize_upsampling_has_no_transposed_convolution(mod):
    net = mod["network"].GreyLevelUNet(depth=2, features=4, upsample="resize")
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())
    x = torch.rand(1, 1, 24, 40) * 200 + 10
    assert net.eval()(x).shape == x.shape
    torch.jit.script(net)


def test_a_ne2ne_run_packages(uc, params, tmp_path):
    from emzoo.package.load import open_model
    from emzoo.package.spec import Tolerance
    from emzoo.packaging import BuildOptions
    from emzoo.runtime.predictor import Predictor
    from emzoo.train.run import package_run

    data_dir = uc.make_tiny_data(tmp_path / "data")
    words = {**uc.tiny_params, "method": "ne2ne", "tta": True, "upsample": "transpose"}
    words.update(minutes=0, epochs=2)
    result = train(uc, data_dir, tmp_path / "run", overrides=words, progress=False)
    assert result.epochs_completed == 2
    options = BuildOptions(test_size=64, test_with_bioimageio=False, reproducibility=Tolerance(atol=1e-5))
    path = package_run(tmp_path / "run", tmp_path / "ne2ne.zip", options=options)
    spec = open_model(path).spec
    assert spec.weights["pytorch_state_dict"].architecture.kwargs["upsample"] == "transpose"
    assert spec.emzoo["tta"] is True  # the package asks for test-time augmentation
    noisy = np.random.default_rng(0).integers(0, 255, (1, 1, 48, 48)).astype(np.float32)
    out = Predictor(path, device="cpu").run({"raw": noisy})["denoised"]
    assert out.shape == noisy.shape and 0 < float(out.mean()) < 255  # grey levels
