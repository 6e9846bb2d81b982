"""``emzoo train``: bad input gives one clear line before any training; options parse as documented."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from emzoo.cli import main


def run(*args: str):
    return CliRunner().invoke(main, ["train", *map(str, args)])


def assert_error(result, *fragments: str, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_missing_label(tiny_data, tmp_path):
    (tiny_data / "label" / "3.png").unlink()
    result = run("membrane_segmentation", "--data", tiny_data, "--out", tmp_path / "run")
    assert_error(result, "no label for 1 of 10 images (3.png)")
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_label_of_another_size(tiny_data, tmp_path):
    Image.fromarray(np.full((32, 48), 255, np.uint8)).save(tiny_data / "label" / "4.png")
    result = run("membrane_segmentation", "--data", tiny_data, "--out", tmp_path / "run")
    assert_error(result, "label is 32x48 but its image 4.png is 64x64")
    assert not (tmp_path / "run").exists()


def test_unknown_use_case_lists_the_known_ones(tmp_path):
    result = run("membranes", "--data", tmp_path, "--out", tmp_path / "run")
    assert_error(result, "unknown use case 'membranes'", "membrane_segmentation", code=2)


def test_empty_data_folder(tmp_path):
    (tmp_path / "data").mkdir()
    result = run("membrane_segmentation", "--data", tmp_path / "data", "--out", tmp_path / "run")
    assert_error(result, "the data folder is empty")
    (tmp_path / "data" / "image").mkdir()
    result = run("membrane_segmentation", "--data", tmp_path / "data", "--out", tmp_path / "run")
    assert_error(result, "no images", "found")
    assert not (tmp_path / "run").exists()


def test_label_values_are_checked(tiny_data, tmp_path):
    Image.fromarray(np.ones((64, 64), np.uint8)).save(tiny_data / "label" / "0.png")
    result = run("membrane_segmentation", "--data", tiny_data, "--out", tmp_path / "run")
    assert_error(result, "labels must be 0 (membrane) and 255 (cell interior)")


@pytest.mark.parametrize(
    ("words", "fragment", "code"),
    [
        (["--set", "nonsense=1"], "unknown parameter 'nonsense' (known: ", 2),
        (["--set", "lr=fast"], "lr='fast': expected float", 2),
        (["--set", "crop_size=36"], "crop_size 36 must be a multiple of 2**depth = 8", 2),
        (["--set", "crop_size=128"], "crop_size 128 is larger than the images", 1),
        (["--epochs", "0"], "--epochs must be >= 1", 2),
        (["--resume"], "nothing to resume", 2),
    ],
)
def test_bad_options(tiny_data, tmp_path, words, fragment, code):
    result = run("membrane_segmentation", "--data", tiny_data, "--out", tmp_path / "run", *words)
    assert_error(result, fragment, code=code)
    assert not (tmp_path / "run" / "weights").exists()


def test_out_is_required_and_runs_are_not_overwritten(tiny_data, tmp_path, tiny):
    assert_error(run("membrane_segmentation", "--data", tiny_data), "--out is required", code=2)
    assert (
        run(
            "membrane_segmentation", "--data", tiny_data, "--out", tmp_path / "r", "-q", "--set", *tiny
        ).exit_code
        == 0
    )
    result = run("membrane_segmentation", "--data", tiny_data, "--out", tmp_path / "r", "-q")
    assert_error(result, "already holds a run; add --resume", code=2)


def test_set_takes_several_words_and_trains(tiny_data, tmp_path, tiny):
    result = run(
        "membrane_segmentation", "--data", tiny_data, "--out", tmp_path / "r", "--quiet", "--set", *tiny
    )
    assert result.exit_code == 0, result.output
    assert "finished after 1 epochs" in result.output
    config = (tmp_path / "r" / "config.json").read_text()
    assert '"crop_size": 32' in config and '"features": 4' in config


def test_list_and_show_params():
    result = run("--list")
    assert result.exit_code == 0 and "membrane_segmentation" in result.output
    result = run("membrane_segmentation", "--show-params")
    assert result.exit_code == 0
    assert "crop_size = 256" in result.output and "multiple of 2**depth" in result.output


def test_import_emzoo_and_help_do_not_import_torch():
    code = (
        "import sys, emzoo, emzoo.cli; from click.testing import CliRunner; "
        "r = CliRunner().invoke(emzoo.cli.main, ['--help']); assert r.exit_code == 0, r.output; "
        "r = CliRunner().invoke(emzoo.cli.main, ['train', '--help']); assert r.exit_code == 0, r.output; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
