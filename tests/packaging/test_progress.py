"""``emzoo package RUN``: each step is shown on stderr (``--quiet`` hides them), and a model that loses to
its classical baseline on its main metric is packaged with a plain warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from emzoo.cli import main
from emzoo.train import usecase as usecase_registry
from emzoo.train.run import baseline_shortfall, judged_metric
from tests.packaging.test_run import TinyMembranes, run_dir  # noqa: F401  (the tiny run fixture)

STAGES = (
    "reading the run",
    "measuring the network",
    "exporting onnx, torchscript",
    "evaluating the package",
    "writing the package",
)


class Outscored(TinyMembranes):
    """The tiny use case with a baseline that no model beats on the judged metric."""

    name = "packaging_test_outscored"
    evaluation_metric = ("mean_probability", "max")

    def evaluate(self, predict, data_dir: Path, params):
        result = super().evaluate(predict, data_dir, params)
        result["baseline"] = {"name": "an oracle", "metrics": {"mean_probability": 2.0}}
        return result


@pytest.fixture(autouse=True)
def _registered(monkeypatch):
    for cls in (TinyMembranes, Outscored):
        monkeypatch.setitem(usecase_registry._USECASES, cls.name, cls)


def _package(run: Path, out: Path, *extra: str):
    args = [
        "package",
        str(run),
        "-o",
        str(out),
        "--test-size",
        "64",
        "--weights",
        "onnx",
        "--weights",
        "torchscript",
    ]
    return CliRunner().invoke(main, [*args, "--no-bioimageio-test", *extra])


def test_steps_are_shown_and_a_model_worse_than_its_baseline_is_named(run_dir, tmp_path):  # noqa: F811
    config = json.loads((run_dir / "config.json").read_text())
    outscored = tmp_path / "run"
    outscored.mkdir()
    (outscored / "weights").mkdir()
    (outscored / "weights" / "best.pt").write_bytes((run_dir / "weights" / "best.pt").read_bytes())
    (outscored / "config.json").write_text(json.dumps({**config, "use_case": Outscored.name}))
    result = _package(outscored, tmp_path / "m.zip")
    assert result.exit_code == 0, result.output
    stderr = result.stderr
    positions = [stderr.find(stage) for stage in STAGES]
    assert -1 not in positions and positions == sorted(positions), stderr
    assert "images predicted: 1" in stderr
    (warning,) = [line for line in stderr.splitlines() if "worse than its classical baseline" in line]
    assert warning.lower().startswith("warning: the model (mean_probability 0.")
    assert "(an oracle, mean_probability 2) on its main metric" in warning
    assert (tmp_path / "m.zip").is_file() and f"wrote {tmp_path / 'm.zip'}" in result.stdout

    quiet = _package(run_dir, tmp_path / "q.zip", "--quiet")  # beats its baseline: no warning
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == "" and quiet.stdout.strip() == f"wrote {tmp_path / 'q.zip'}"


@pytest.mark.parametrize(
    ("metrics", "baseline", "judged", "warns"),
    [
        ({"adapted_rand_error": 0.1, "dice": 0.8}, {"adapted_rand_error": 0.4, "dice": 0.9}, "min", False),
        ({"psnr_s25": 24.6, "psnr_mean": 20.1}, {"psnr_s25": 29.6, "psnr_mean": 21.9}, "max", True),
        ({"mean_probability": 0.4}, {"mean_probability": 0.5}, None, False),
    ],
)
def test_the_judged_metric(metrics, baseline, judged, warns):
    evaluation = {"metrics": metrics, "baseline": {"name": "classical", "metrics": baseline}}
    uc = TinyMembranes()
    uc.main_metric = ("adapted_rand_error", "min")
    found = judged_metric(uc, evaluation)
    assert (found[1] if found else None) == judged
    if judged == "max":
        assert found[0] == "psnr_mean"  # an average over the levels, before the first level
    assert bool(baseline_shortfall(uc, evaluation)) is warns
