"""The membrane use case: its checks, split, evaluation and baseline on the real ISBI 2012 slices
(skipped without ../shared/data), and the postprocessing it shares with the package."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from emzoo.errors import UsageError
from emzoo.train.params import load_param_file, resolve_params
from emzoo.train.trainer import train
from tests.conftest import shared
from tests.train.usecases import sibling


@pytest.fixture(scope="module")
def isbi():
    return shared("isbi2012_membranes")


def test_real_data_passes_the_checks_and_splits_by_slice(membrane, isbi):
    membrane.check_data(isbi)  # the folder holding train/ works as well as train/ itself
    split = membrane.split(isbi / "train", {})
    assert split["train"] == [f"{i}.png" for i in range(17)]
    assert split["val"] == ["17.png", "18.png", "19.png"]
    assert split["test"] == [f"{i}.png" for i in range(20, 25)]
    sample = membrane.sample_input(isbi)
    assert sample.shape == (1, 512, 512) and sample.dtype == np.uint8


def test_evaluate_calls_predict_on_the_test_slices_and_scores_the_baseline(membrane, isbi):
    truth = {}
    for i in range(20, 25):
        image = np.asarray(Image.open(isbi / "train" / "image" / f"{i}.png"))
        truth[image.tobytes()] = (np.asarray(Image.open(isbi / "train" / "label" / f"{i}.png")) == 0)[None]
    calls = []

    def perfect_with_tta(image, tta=None):
        """Perfect with test-time augmentation, all background without it."""
        calls.append((image.shape, tta))
        mask = truth[image[0].tobytes()].astype(np.float32)
        return {"membrane_probability": mask if tta else np.zeros_like(mask)}

    result = membrane.evaluate(perfect_with_tta, isbi, {"baseline_sigma": 2.0})
    assert calls == [((1, 512, 512), True), ((1, 512, 512), False)] * 5
    assert result["dataset_role"] == "test" and result["sample_count"] == 5
    metrics = result["metrics"]
    assert {k: metrics[k] for k in ("pixel_error", "dice", "adapted_rand_error", "v_rand", "v_info")} == {
        "pixel_error": 0.0,
        "dice": 1.0,
        "adapted_rand_error": 0.0,
        "v_rand": 1.0,  # the ISBI challenge scores of a perfect map on real labels
        "v_info": 1.0,
    }
    # the scores without test-time augmentation come from the second call (all background here)
    assert metrics["dice_no_tta"] == 0.0 and metrics["v_rand_no_tta"] < 0.5
    assert [s["name"] for s in result["samples"]] == [f"{i}.png" for i in range(20, 25)]
    base = result["baseline"]
    assert "Otsu" in base["name"]
    assert 0.2 < base["metrics"]["pixel_error"] < 0.35 and 0.5 < base["metrics"]["dice"] < 0.65
    assert 0.3 < base["metrics"]["adapted_rand_error"] < 0.5


def test_postprocess_is_the_packages_sigmoid(membrane):
    logits = np.array([[[-2.0, 0.0, 3.0]]], np.float32)
    probability = membrane.postprocess(logits)
    np.testing.assert_allclose(probability, 1 / (1 + np.exp(-logits)), rtol=1e-6)
    assert probability.dtype == np.float32
    info = membrane.packaging({"depth": 3, "features": 16})
    assert [op["id"] for op in info.outputs[0].processing] == ["sigmoid", "ensure_dtype"]
    assert [op["id"] for op in info.inputs[0].processing] == [
        "ensure_dtype",
        "zero_mean_unit_variance",
        "ensure_dtype",
    ]
    assert info.pixel_size == {"y": 4.0, "x": 4.0} and info.pixel_unit == "nanometer"
    assert {c["doi"] for c in info.cite} >= {"10.1371/journal.pbio.1000500", "10.3389/fnana.2015.00142"}


def test_boundary_weights_travel_with_the_training_masks_into_the_loss(membrane, tmp_path):
    import torch

    BceDiceLoss = sibling(membrane, "loss").BceDiceLoss

    params = resolve_params(
        load_param_file(membrane.params_file), {**membrane.tiny_params, "boundary_weight": 10}
    )
    sets = membrane.datasets(membrane.make_tiny_data(tmp_path / "data"), params)
    _, target = sets["train"][0]
    assert target.shape[0] == 2 and sets["val"][0][1].shape[0] == 1  # validation keeps the plain mask
    mask, weight = target.numpy()
    assert set(np.unique(mask)) <= {0.0, 1.0} and weight.min() >= 1.0
    assert weight[mask == 1].mean() > weight[mask == 0].mean()  # membranes between cells weigh more
    logits = torch.zeros(1, 1, *mask.shape)
    bce = BceDiceLoss(dice_weight=0)
    weighted, plain = bce(logits, target[None]), bce(logits, target[None, :1])
    assert torch.isclose(weighted, plain * weight.mean())  # log 2 per pixel, times its weight
    with pytest.raises(UsageError, match="boundary_weight must be >= 0"):
        membrane.check_params({**params, "boundary_weight": -1})


@pytest.mark.slow
def test_loss_goes_down_on_real_data(membrane, isbi, tmp_path):
    params = {"epochs": 3, "iterations_per_epoch": 6, "batch_size": 2, "crop_size": 128, "features": 8}
    train(membrane, isbi, tmp_path / "run", overrides=params, progress=False)
    from emzoo.train.runfiles import read_csv

    rows = read_csv(tmp_path / "run" / "log.csv")
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
