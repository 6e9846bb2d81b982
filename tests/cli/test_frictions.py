"""What a new user hit first (issue 15): ``emzoo info`` metrics, ``emzoo train --list`` columns, an
unfilled template use case, and the time per epoch of ``emzoo train --show-params``; through the
real CLI in subprocesses."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emzoo.cli.info import evaluation_lines
from emzoo.package.load import open_model

REPO = Path(__file__).resolve().parents[2]
MEMBRANES = REPO / "zoo_models" / "em-membrane-unet2d"


def emzoo(*args, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emzoo", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


# -- emzoo info ---------------------------------------------------------------------------------------


def _recorded(name: str) -> tuple[float, float]:
    """The membrane package's recorded test value of ``name`` and its baseline's (the expected lines
    are built from them with 4 significant digits, so a retrained package keeps the test valid)."""
    evaluation = open_model(MEMBRANES).spec.emzoo["evaluation"]
    return evaluation["metrics"][name], evaluation["baseline"]["metrics"][name]


def test_info_prints_each_metric_once_rounded_with_the_names_used_everywhere():
    result = emzoo("info", MEMBRANES)
    assert result.returncode == 0, result.stderr
    block = result.stdout.split("  evaluation on ", 1)[1].split("\n  license:", 1)[0]
    lines = block.splitlines()
    assert lines[0].endswith("(test data, 5 images):")
    for name in ("adapted_rand_error", "dice"):
        ours, base = _recorded(name)
        assert f"      {name}: {ours:.4g} (baseline {base:.4g})" in lines
    assert "      baseline: Gaussian smoothing (sigma 2 px) + Otsu threshold" in lines
    assert "[" not in block and not re.search(r"\d{6}", block)  # no one-element lists, no 16 digits
    assert "adapted_rand_err:" not in block


def test_info_reads_the_short_names_of_packages_without_emzoos_record():
    """A package that has only bioimage.io's evaluations (the shortened ``adapted_rand_err``)."""
    spec = open_model(MEMBRANES).spec
    assert "adapted_rand_err" in spec.evaluations[0]["metrics"]  # what bioimage.io holds (16 chars)
    lines = evaluation_lines(spec.evaluations[:1], None)  # the model's own (the next: its OOD check's)
    ours = {name: _recorded(name)[0] for name in ("pixel_error", "dice", "adapted_rand_error")}
    for name, value in ours.items():
        assert f"      {name}: {value:.4g}" in lines[1:]
    assert not any("adapted_rand_err:" in line for line in lines)
    where = spec.evaluations[0]["metrics"].index("adapted_rand_err")
    long = ["a description"] * len(spec.evaluations[0]["metrics"])  # descriptions, not names
    old = [{**spec.evaluations[0], "metrics_long": long}]
    assert (
        evaluation_lines(old, None)[1 + where]
        == f"      adapted_rand_error: {ours['adapted_rand_error']:.4g}"
    )


# -- emzoo train --list --------------------------------------------------------------------------------


def test_train_list_aligns_its_columns(tmp_path):
    for name, doc in (("a", "The short one."), ("a_much_longer_use_case", "The long one.")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "usecase.py").write_text(
            "from emzoo.train.usecase import UseCase, register_usecase\n"
            f"@register_usecase\nclass C(UseCase):\n    '''{doc}'''\n    name = {name!r}\n"
        )
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "usecase.py").write_text("import not_a_module_anywhere\n")
    result = emzoo("train", "--list", env={"EMZOO_TRAINING_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["a", "a_much_longer_use_case", "broken"]
    columns = {len(r) - len(r.split(None, 1)[1]) for r in rows}
    assert columns == {2 + len("a_much_longer_use_case") + 2}, rows
    assert rows[2].split(None, 1)[1].startswith("BROKEN: ModuleNotFoundError")


# -- an unfilled template ------------------------------------------------------------------------------


def test_an_unfilled_template_names_the_method_to_write(tmp_path):
    pytest.importorskip("torch", reason="emzoo train needs torch")
    shutil.copytree(REPO / "training" / "_template", tmp_path / "training" / "my_case")
    (tmp_path / "data").mkdir()
    env = {"EMZOO_TRAINING_DIR": str(tmp_path / "training")}
    listed = emzoo("train", "--list", env=env)
    assert "my_use_case" in listed.stdout, listed.stdout + listed.stderr
    for extra in ([], ["--show-params"]):
        result = emzoo(
            "train", "my_use_case", "--data", tmp_path / "data", "--out", tmp_path / "run", *extra, env=env
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        file = tmp_path / "training" / "my_case" / "usecase.py"
        assert result.stderr.strip().splitlines() == [
            f"Error: use case 'my_use_case' does not implement check_data(): fill it in {file}"
        ]
    assert not (tmp_path / "run").exists()


# -- the time per epoch -------------------------------------------------------------------------------


def _seconds(line: str) -> float:
    match = re.match(r"time per epoch: about ([0-9.e+-]+) s", line)
    assert match, line
    return float(match.group(1))


def test_show_params_measures_the_epoch_time_or_reads_a_runs_log(tmp_path):
    pytest.importorskip("torch", reason="emzoo train needs torch")
    from emzoo.train.discovery import get_usecase
    from emzoo.train.runfiles import read_csv

    membrane = get_usecase("membrane_segmentation")
    data = membrane.make_tiny_data(tmp_path / "data")
    tiny = [f"{k}={v}" for k, v in {**membrane.tiny_params, "epochs": 2}.items()]

    hint = emzoo("train", "membrane_segmentation", "--show-params")
    assert hint.returncode == 0 and "time per epoch: add --data DIR to measure it" in hint.stdout

    measured = emzoo("train", "membrane_segmentation", "--show-params", "--data", data, "--set", *tiny)
    assert measured.returncode == 0, measured.stderr
    line = measured.stdout.strip().splitlines()[-1]
    assert (
        "measured on 3 training steps (of 1 per epoch" in line and "one validation pass (3 samples)" in line
    )
    seconds = _seconds(line)

    run = emzoo(
        "train", "membrane_segmentation", "--data", data, "--out", tmp_path / "run", "-q", "--set", *tiny
    )
    assert run.returncode == 0, run.stderr
    logged = sorted(float(r["seconds"]) for r in read_csv(tmp_path / "run" / "log.csv"))
    # the same kind of time as the run measures: plausible, not exact (the CPU is shared while testing)
    assert 0 < seconds < 30 and seconds < 20 * max(logged) + 2, (seconds, logged)

    recorded = emzoo("train", "membrane_segmentation", "--show-params", "--out", tmp_path / "run")
    line = recorded.stdout.strip().splitlines()[-1]
    assert f"recorded by the run in {tmp_path / 'run'} (median of 2 epochs)" in line
    assert _seconds(line) == pytest.approx(sum(logged) / 2, rel=0.1, abs=0.01)
