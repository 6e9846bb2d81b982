"""The ``particle_detection`` use case: targets, loss, the exportable network, calibration, baselines,
and a short training on synthetic blobs that finds them and their sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emzoo.train.discovery import get_usecase
from emzoo.train.params import load_param_file, resolve_params
from tests.train.usecases import sibling


@pytest.fixture(scope="module")
def uc():
    return get_usecase("particle_detection")


def _module(uc, name):
    return sibling(uc, name)


@pytest.fixture(scope="module")
def params(uc):
    return resolve_params(load_param_file(uc.params_file), dict(uc.tiny_params))


def test_targets_peak_at_one_with_sizes(uc, params):
    data = _module(uc, "data")
    target = data.render_targets(
        (64, 64), np.array([[20.2, 20.0], [40.0, 44.6]]), np.array([8.0, 30.0]), params
    )
    heat, diameter, _ = target
    assert heat[20, 20] == 1.0 and heat[40, 45] == 1.0 and np.sum(heat == 1.0) == 2
    assert diameter[20, 20] == 8.0 and diameter[40, 45] == 30.0
    truth = data.truth_of(target)
    assert truth.centres.tolist() == [[20.0, 20.0], [40.0, 45.0]] and truth.sizes[:, 0].tolist() == [
        8.0,
        30.0,
    ]


def test_loss_prefers_the_target(uc, params):
    data = _module(uc, "data")
    target = torch.from_numpy(
        data.render_targets((32, 32), np.array([[10.0, 10.0]]), np.array([6.0]), params)
    )[None]
    loss = uc.loss(params)
    good = loss((target[:, :1].clamp(1e-3, 1 - 1e-3), target[:, 1:2].clamp(min=1)), target)
    bad = loss((torch.full_like(target[:, :1], 0.1), torch.full_like(target[:, :1], 20.0)), target)
    assert float(good) < 0.1 < float(bad)


def test_network_gives_two_maps_and_scripts(uc, params):
    model = uc.build_model(params).eval()
    heat, diameter = model(torch.rand(1, 1, 48, 64))
    assert heat.shape == diameter.shape == (1, 1, 48, 64)
    assert float(heat.min()) >= 0 and float(heat.max()) <= 1 and float(diameter.min()) > 0
    scripted = torch.jit.script(model)
    assert torch.allclose(scripted(torch.ones(1, 1, 32, 32))[0], model(torch.ones(1, 1, 32, 32))[0])


def test_calibration_picks_the_best_validation_threshold(uc, params):
    usecase = _module(uc, "usecase")
    validation = {"f1": 0.7, "f1_t20": 0.6, "f1_t30": 0.7, "f1_t40": 0.82, "f1_t50": 0.8, "f1_t60": 0.5}
    assert usecase.best_threshold(validation) == (0.4, 0.82)
    assert uc.calibrate(params, validation) == {"score_threshold": 0.4}
    assert uc.calibrate(params, {"f1": 0.5}) == {}
    assert uc.package_config({**params, "score_threshold": 0.4})["counting"]["threshold"] == 0.4


def test_baselines_find_synthetic_particles_with_sizes(uc, params, tmp_path):
    from emzoo.tasks.detection import detection_scores, read_particle_labels

    baseline = _module(uc, "baseline")
    folder = uc.make_tiny_data(tmp_path / "data")
    data = _module(uc, "data")
    for name, raw, _ in data.pc.load_raw(folder, ["synth0.png", "synth1.png"]):  # HAADF-like, bright field
        truth = read_particle_labels(folder / "labels" / name.replace(".png", ".txt"), raw.shape)
        found, diameters = baseline.otsu_components(raw, smooth_sigma=1.0, min_area=12, low=1.0, high=99.8)
        scores = detection_scores(found, truth, diameters=diameters)
        assert scores["f1"] > 0.8 and scores["box_ap50"] > 0.6, (name, scores)


def test_short_training_finds_blobs_and_their_sizes(uc, tmp_path):
    """About 30 s on 2 CPU cores: 160 steps on 8 synthetic images, then the model on a held-out one."""
    from emzoo.tasks.counting import count_outputs
    from emzoo.tasks.detection import detection_scores, read_particle_labels
    from emzoo.train.trainer import train

    folder = uc.make_tiny_data(tmp_path / "data")
    overrides = {
        **uc.tiny_params,
        "epochs": 8,
        "iterations_per_epoch": 20,
        "batch_size": 4,
        "crop_size": 64,
        "val_crop": 128,
        "depth": 3,
        "features": 8,
        "max_features": 32,
        "lr": 3.0e-3,
        "scale_min": 1.0,
        "scale_max": 1.0,
        "patience": 0,
    }
    torch.set_num_threads(2)
    train(uc, folder, tmp_path / "run", overrides=overrides, progress=False)
    params = resolve_params(load_param_file(uc.params_file), overrides)
    model = uc.build_model(params)
    model.load_state_dict(torch.load(tmp_path / "run" / "weights" / "best.pt", weights_only=True))
    model.eval()
    data, usecase = _module(uc, "data"), _module(uc, "usecase")
    name = uc.split(folder, params)["test"][0]
    _, raw, _ = data.pc.load_raw(folder, [name])[0]
    x = data.pc.normalise(raw, params["percentile_low"], params["percentile_high"])
    with torch.no_grad():
        heat, diameter = model(torch.from_numpy(x)[None, None])
    result = count_outputs(
        {"heat": heat[0].numpy(), "diameter": diameter[0].numpy()}, usecase._config(params)
    )
    truth = read_particle_labels(folder / "labels" / name.replace(".png", ".txt"), raw.shape)
    scores = detection_scores(result.centres, truth, diameters=result.diameters)
    assert scores["f1"] >= 0.7, scores
    true_d = np.sqrt(np.prod(truth.sizes, axis=1))
    assert abs(np.median(result.diameters) / np.median(true_d) - 1) < 0.35, (result.diameters, true_d)


def test_training_statistics_are_kept_per_contrast(uc, params):
    """Issue 11: HAADF and bright-field training images get statistics of their own beside the pooled
    ones, so that neither contrast is described by a mix of both."""
    from emzoo.train.run import training_statistics
    from tests.conftest import shared

    data_dir = shared("stem_nanoparticles")
    split = _module(uc, "data").pc.split(data_dir)
    stats = training_statistics(uc, data_dir, {"params": params, "split": split})
    groups = stats["groups"]
    assert set(groups) == {"haadf", "bright_field"}
    assert groups["haadf"]["n_images"] + groups["bright_field"]["n_images"] == stats["n_images"] == 15
    # dark particles on a bright support: the bright-field images are the brighter ones
    assert groups["bright_field"]["mean"] > stats["mean"] > groups["haadf"]["mean"]
