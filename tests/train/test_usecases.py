"""Every registered use case (``training/*``): its parameters are documented, and it trains one step on
its own tiny data into a run folder that follows the contract the packager reads."""

from __future__ import annotations

import json

import pytest
import torch

from emzoo.train.discovery import broken_usecases, discover, get_usecase
from emzoo.train.params import TRAINER_KEYS, load_param_file
from emzoo.train.trainer import train

USECASES = sorted(discover())


def test_all_use_cases_import():
    assert not broken_usecases()
    assert "membrane_segmentation" in USECASES


@pytest.mark.parametrize("name", USECASES)
def test_parameters_are_documented(name):
    uc = get_usecase(name)
    params = load_param_file(uc.params_file)  # refuses entries without help
    assert set(TRAINER_KEYS) <= set(params)
    assert all(len(p.help) > 30 for p in params.values()), "explain each parameter in a sentence or two"
    assert set(uc.tiny_params) <= set(params)


@pytest.fixture(scope="module", params=USECASES)
def tiny_run(request, tmp_path_factory):
    """One use case trained for one iteration on its tiny data (shared by the tests below)."""
    uc = get_usecase(request.param)
    base = tmp_path_factory.mktemp(request.param)
    data_dir = uc.make_tiny_data(base / "data")
    result = train(uc, data_dir, base / "run", overrides=dict(uc.tiny_params), progress=False)
    return uc, data_dir, base / "run", result


def test_tiny_training_writes_the_run_folder(tiny_run):
    uc, data_dir, run, result = tiny_run
    assert result.status == "finished" and result.epochs_completed == uc.tiny_params.get("epochs", 1)
    config = json.loads((run / "config.json").read_text())
    assert config["use_case"] == uc.name
    assert config["split"] == uc.split(data_dir, config["params"])
    assert {"train", "val", "test"} == set(config["split"])
    for key in ("params", "seed", "emzoo_version", "started", "finished", "device"):
        assert config[key] is not None, key
    state = torch.load(run / "weights" / "best.pt", weights_only=True)
    model = uc.build_model(config["params"])
    model.load_state_dict(state)  # a plain state dict of the use case's model
    assert torch.load(run / "weights" / "latest.pt", weights_only=True)["epoch"] == result.epochs_completed
    assert (run / "log.csv").read_text().count("\n") == result.epochs_completed + 1
    assert {p.name for p in (run / "plots").glob("*.png")} == {"loss.png", "metrics.png"}
    assert list((run / "samples").glob("*.png"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset_role"] == "validation"
    assert uc.main_metric[0] in metrics["metrics"]


def test_tiny_use_case_packaging_metadata(tiny_run):
    uc, data_dir, run, _ = tiny_run
    params = json.loads((run / "config.json").read_text())["params"]
    info = uc.packaging(params)
    assert info.name and info.license and info.cite and info.inputs and info.outputs
    for tensor in info.inputs:
        assert tensor.processing[-1] == {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}
    source, callable_name, kwargs = uc.architecture(params)
    assert source.is_file() and callable_name in source.read_text()
    assert sum(p.numel() for p in uc.build_model(params).parameters()) > 0 and isinstance(kwargs, dict)
    sample = uc.sample_input(data_dir)
    assert sample.ndim == len(info.inputs[0].axes)


# -- packaging -----------------------------------------------------------------------------------------
# PLACE FOR THE PACKAGING ENGINEER: package each tiny run (``tiny_run`` gives the use case, its data
# folder and the run folder), test the package with emzoo's runtime, and check that
# ``uc.evaluate(predict, data_dir, params)`` returns test metrics for the model and the baseline.
