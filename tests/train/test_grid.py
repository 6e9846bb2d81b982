"""Grid search: one sub-run per combination and a ranked summary."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from emzoo.cli import main
from emzoo.errors import UsageError
from emzoo.train.grid import grid_search, parse_grid, run_name
from emzoo.train.runfiles import read_csv


def test_parse_grid_and_names():
    grid = parse_grid(["lr=1e-3,3e-4", "batch_size=2,4"], {"lr": 1.0e-3, "batch_size": 4})
    assert grid == {"lr": [1e-3, 3e-4], "batch_size": [2, 4]}
    assert run_name({"lr": 3e-4, "batch_size": 2}) == "lr=0.0003_batch_size=2"
    with pytest.raises(UsageError, match="unknown parameter 'lx'"):
        parse_grid(["lx=1,2"], {"lr": 1.0})


def test_grid_from_the_command_line(tiny_data, tmp_path, tiny):
    out = tmp_path / "grid"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "membrane_segmentation",
            "--data",
            str(tiny_data),
            "--out",
            str(out),
            "-q",
            "--set",
            *tiny,
            "--grid",
            "lr=1e-3,3e-4",
            "seed=0",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "grid_summary.csv")
    assert sorted(r["run"] for r in rows) == ["lr=0.0003_seed=0", "lr=0.001_seed=0"]
    assert sorted(r["rank"] for r in rows) == ["1", "2"] and "val_adapted_rand_error" in rows[0]
    for row in rows:
        assert (out / row["run"] / "weights" / "best.pt").is_file()
    assert "best: " in result.output


def test_grid_checks_every_combination_first(membrane, tiny_data, tmp_path):
    tiny = {k: v for k, v in membrane.tiny_params.items() if k != "crop_size"}
    with pytest.raises(UsageError, match="crop_size 34 must be a multiple"):
        grid_search(membrane, tiny_data, tmp_path / "g", ["crop_size=32,34"], overrides=tiny)
    assert not (tmp_path / "g").exists()
    with pytest.raises(UsageError, match="both set"):
        grid_search(membrane, tiny_data, tmp_path / "g", ["lr=1e-3,1e-4"], overrides={"lr": 0.01})
