"""``emzoo predict --rescale auto|off --pixel-size SIZE``: inputs resampled to the model's pixel size
and the outputs back, through the real CLI.

The acceptance case: the membrane model (trained at 4 nm/px) on its five held-out ISBI 2012 test
slices (20-24, see zoo_models/em-membrane-unet2d/README.md) binned 2x2 and tagged 8 nm/px. The
outputs of ``--rescale auto`` lie on the 8 nm grid of the input, and are scored there against the
labels binned the same way (a binned pixel is membrane when at least half of its four pixels are):
that scores exactly what the command wrote, with no interpolation added by the test, and the run
without rescaling is scored the same way. The full-resolution run is scored against the full-resolution
labels, as the model card does. Measured (membrane F1 = Dice at 0.5): full resolution 0.812 (mean),
8 nm with ``auto`` 0.809, 8 nm without rescaling 0.690.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image as PILImage

from emzoo import metrics
from emzoo.cli import main
from emzoo.io import read_image
from emzoo.io.units import convert
from tests.conftest import shared

ZOO = Path(__file__).resolve().parents[2] / "zoo_models"
MEMBRANE = ZOO / "em-membrane-unet2d"
COUNTER = ZOO / "em-particle-counter"
TEST_SLICES = range(20, 25)  # the membrane model's test split
OUTPUT = "membrane_probability"


def emzoo(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emzoo", *map(str, args)], capture_output=True, text=True, timeout=600
    )


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def _bin2(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).mean(axis=(1, 3))


def _tiff(path: Path, data: np.ndarray, nm: float) -> Path:
    tifffile.imwrite(path, data, resolution=(1e7 / nm, 1e7 / nm), resolutionunit="CENTIMETER")
    return path


def _f1(out_dir: Path, labels: dict[int, np.ndarray]) -> dict[int, float]:
    scores = {}
    for i, label in labels.items():
        probability = read_image(out_dir / f"{i}_{OUTPUT}.tif").data
        assert probability.shape == label.shape
        scores[i] = metrics.dice(probability, label, threshold=0.5)
    return scores


def test_an_8nm_isbi_slice_scores_as_the_full_resolution_one_with_rescale_auto(tmp_path):
    data = shared("isbi2012_membranes", "train")
    full_in, small_in = tmp_path / "full", tmp_path / "small"
    full_in.mkdir()
    small_in.mkdir()
    labels, small_labels = {}, {}
    for i in TEST_SLICES:
        image = np.asarray(PILImage.open(data / "image" / f"{i}.png"))
        membrane = np.asarray(PILImage.open(data / "label" / f"{i}.png")) == 0  # 0: membrane
        _tiff(full_in / f"{i}.tif", image, 4.0)
        _tiff(small_in / f"{i}.tif", np.round(_bin2(image.astype(np.float64))).astype(np.uint8), 8.0)
        labels[i], small_labels[i] = membrane, _bin2(membrane.astype(np.float64)) >= 0.5

    full = emzoo("predict", MEMBRANE, full_in, "-o", tmp_path / "out_full", "-q", "--weights", "onnx")
    auto = emzoo(
        "predict",
        MEMBRANE,
        small_in,
        "-o",
        tmp_path / "out_auto",
        "-q",
        "--weights",
        "onnx",
        "--rescale",
        "auto",
    )
    off = emzoo("predict", MEMBRANE, small_in, "-o", tmp_path / "out_off", "-q", "--weights", "onnx")
    for done in (full, auto, off):
        assert done.returncode == 0, done.stderr
    assert auto.stdout.count("resampled 8 nm/px -> 4 nm/px") == len(TEST_SLICES)
    assert "resampled" not in full.stdout + off.stdout

    f1_full = _f1(tmp_path / "out_full", labels)
    f1_auto = _f1(tmp_path / "out_auto", small_labels)
    f1_off = _f1(tmp_path / "out_off", small_labels)
    table = {i: (round(f1_full[i], 4), round(f1_auto[i], 4), round(f1_off[i], 4)) for i in TEST_SLICES}
    for i in TEST_SLICES:
        assert abs(f1_auto[i] - f1_full[i]) <= 0.03, table
    assert np.mean(list(f1_off.values())) < np.mean(list(f1_auto.values())) - 0.05, table
    assert read_image(tmp_path / "out_auto" / f"20_{OUTPUT}.tif").meta.pixel_size == {"y": 8.0, "x": 8.0}


def test_a_bad_pixel_size_is_one_line_naming_the_flag(tmp_path):
    image = _tiff(tmp_path / "em.tif", np.zeros((128, 128), np.uint8), 4.0)
    done = emzoo("predict", MEMBRANE, image, "-o", tmp_path / "out", "--pixel-size", "4 furlongs")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "Error: --pixel-size '4 furlongs': unknown length unit 'furlongs' (known: pm, Å, nm, µm, mm)"
    )
    result = run("predict", MEMBRANE, image, "-o", tmp_path / "out", "--pixel-size", "fine")
    assert result.exit_code == 2
    assert "Error: --pixel-size 'fine': give a number and a unit, e.g. 2.5nm" in result.output
    assert not (tmp_path / "out").exists()


def test_rescale_auto_is_refused_with_streaming(tmp_path):
    image = _tiff(tmp_path / "em.tif", np.zeros((128, 128), np.uint8), 8.0)
    result = run("predict", MEMBRANE, image, "-o", tmp_path / "out", "--rescale", "auto", "--stream")
    assert result.exit_code == 2
    assert result.output.strip() == "Error: --rescale auto resamples in memory only: leave out --stream"


def test_a_model_without_training_pixel_size_says_so_once(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        _tiff(inputs / f"{name}.tif", rng.integers(0, 255, (128, 128), dtype=np.uint8), 2.0)
    result = run("predict", COUNTER, inputs, "-o", tmp_path / "out", "-q", "--rescale", "auto")
    assert result.exit_code == 0, result.output
    note = "--rescale auto: the model records no training pixel size: inputs are not resampled"
    assert result.output.count(note) == 1
    assert "resampled " not in result.output.replace(note, "")
    result = run("predict", COUNTER, inputs, "-o", tmp_path / "out2", "--pixel-size", "2")
    assert result.exit_code == 2
    assert "--pixel-size 2: a bare number is in the model's unit and this model records none" in result.output


def test_the_pixel_size_flag_wins_over_the_file(tmp_path):
    image = _tiff(tmp_path / "em.tif", np.random.default_rng(0).integers(0, 255, (128, 96), np.uint8), 4.0)
    out = tmp_path / "out"
    result = run("predict", MEMBRANE, image, "-o", out, "-q", "--rescale", "auto", "--pixel-size", "80Å")
    assert result.exit_code == 0, result.output
    assert f"{image}: --pixel-size 80 Å/px used instead of the file's 4 nm/px" in result.output
    assert f"{image}: resampled 8 nm/px -> 4 nm/px" in result.output
    written = read_image(out / f"em_{OUTPUT}.tif")
    assert written.shape == (128, 96)
    assert convert(written.meta.pixel_size["x"], written.meta.unit, "nm") == pytest.approx(8.0)
