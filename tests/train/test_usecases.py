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


@pytest.fixture(scope="module")
def tiny_package(tiny_run, tmp_path_factory):
    """The tiny run packaged as users would (``package_run``), without bioimageio.core's slow test.

    An untrained network's outputs can be tiny (a density map of ~1e-5 per pixel): the default atol
    (1% of the test output's maximum) then trips bioimageio.spec's own "atol <= 1%" check by float
    noise, so the tiny packages promise a negligible atol and rely on the relative tolerance."""
    from emzoo.package.spec import Tolerance
    from emzoo.packaging import BuildOptions
    from emzoo.train.run import package_run

    uc, data_dir, run, _ = tiny_run
    options = BuildOptions(test_size=64, test_with_bioimageio=False, reproducibility=Tolerance(atol=1e-9))
    out = tmp_path_factory.mktemp(f"{uc.name}-package") / "model.zip"
    return uc, data_dir, package_run(run, out, options=options)


def test_tiny_run_packages_and_its_package_reproduces(tiny_package):
    from emzoo.checks.testing import reproduce
    from emzoo.package.load import open_model

    uc, _, path = tiny_package
    package = open_model(path)
    assert set(package.spec.weight_formats()) == {"onnx", "torchscript", "pytorch_state_dict"}
    for fmt in package.spec.weight_formats():
        ok, detail = reproduce(package, fmt)
        assert ok, f"{fmt}: {detail}"
    assert package.spec.emzoo["usecase"] == uc.name


def test_tiny_package_carries_the_evaluation_of_model_and_baseline(tiny_package):
    """``package_run`` ran ``uc.evaluate`` through the draft package: the test metrics of the model and
    of the classical baseline are in ``config.emzoo.evaluation`` and ``config.bioimageio.evaluations``."""
    from emzoo.package.load import open_model

    _, _, path = tiny_package
    spec = open_model(path).spec
    evaluation = spec.emzoo["evaluation"]
    # a self-supervised model may be scored on the noisy images it trained on (never on their clean
    # targets): its role then says "train"
    roles = ("test", "independent") + (("train",) if "self-supervised" in spec.tags else ())
    assert evaluation["dataset_role"] in roles and evaluation["sample_count"] >= 1
    metrics, baseline = evaluation["metrics"], evaluation["baseline"]["metrics"]
    assert metrics and baseline and evaluation["baseline"]["name"]
    assert set(baseline) <= set(metrics), "the baseline is scored with the model's metrics"
    assert all(isinstance(v, float) for v in (*metrics.values(), *baseline.values()))
    assert spec.evaluations and spec.evaluations[0]["sample_count"] == evaluation["sample_count"]
    assert "samples" not in evaluation  # per-image results go to the attached evaluation.json only


def test_evaluate_command_scores_a_package_on_labelled_folders(tiny_run, tmp_path):
    """``emzoo evaluate MODEL IMAGES LABELS`` through the packaged model, for use cases that read labels."""
    from click.testing import CliRunner

    from emzoo.cli import main
    from emzoo.packaging import BuildOptions
    from emzoo.train.run import package_run

    uc, data_dir, run, _ = tiny_run
    images, labels = data_dir / "image", data_dir / "label"
    if not (images.is_dir() and labels.is_dir()):
        pytest.skip(f"{uc.name}'s tiny data has no image/ and label/ folders")
    try:
        uc.read_label(next(labels.iterdir()))
    except NotImplementedError:
        pytest.skip(f"{uc.name} does not read label files")
    package = package_run(run, tmp_path / "model.zip", options=BuildOptions(test_with_bioimageio=False))
    report = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["evaluate", str(package), str(images), str(labels), "-o", str(report)])
    assert result.exit_code == 0, result.output
    saved = json.loads(report.read_text())
    assert saved["usecase"] == uc.name and saved["sample_count"] == len(list(images.iterdir()))
    assert set(saved["metrics"]) == set(saved["samples"][0]["metrics"])
    assert "mean" in result.output


def test_tiny_package_card_repeats_the_run_with_its_settings(tiny_package):
    """The card's "Reproduce this model" gives the flags of the parameters that differ from the use
    case's params.yaml (the tiny run's --epochs and --set values)."""
    import zipfile

    from emzoo.train.params import load_param_file, resolve_params

    uc, _, path = tiny_package
    card = zipfile.ZipFile(path).read("README.md").decode()
    section = card[card.index("## Reproduce this model") :]
    command = next(line for line in section.splitlines() if line.startswith(f"emzoo train {uc.name}"))
    defaults = resolve_params(load_param_file(uc.params_file), {})
    tiny = {k: v for k, v in uc.tiny_params.items() if v != defaults[k]}
    if "epochs" in tiny:
        assert f"--epochs {tiny.pop('epochs')}" in command
    for key, value in tiny.items():
        assert f" {key}={value}" in command, (key, command)
