"""Bad input: one clear line, exit code 2 (usage) or 1 (failure), never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from emzoo.cli import main
from tests.conftest import shared

ONNX_PKG = "unet2d_nuclei_broad_v0_5_4_offline.zip"
TORCH_PKG = "unet2d_multi_tensor_v0_5_4.zip"


def run(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        result.exception
    )
    return result


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "em.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 255, (512, 512), dtype=np.uint8))
    return path


def test_missing_input_file(tmp_path):
    result = run("predict", shared("bioimageio_models", ONNX_PKG), tmp_path / "nope.tif")
    assert result.exit_code == 2
    assert "nope.tif: no such file or folder" in result.output


def test_missing_model(tmp_path, image):
    result = run("predict", tmp_path / "model.zip", image)
    assert result.exit_code == 1
    assert "no such model package" in result.output


def test_not_an_image(tmp_path, image):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    fake = tmp_path / "broken.tif"
    fake.write_text("not a tiff")
    result = run(
        "predict", shared("bioimageio_models", ONNX_PKG), text, fake, image, "-o", tmp_path / "out", "-q"
    )
    assert result.exit_code == 1
    assert "done: 1, skipped: 0, failed: 2" in result.output  # the good image is still predicted
    assert "notes.txt: not an image format emzoo reads" in result.output
    assert "broken.tif: cannot be read as tiff" in result.output


def test_wrong_number_of_dimensions(tmp_path):
    volume = tmp_path / "volume.tif"
    tifffile.imwrite(volume, np.zeros((5, 64, 64), np.uint8))
    result = run("predict", shared("bioimageio_models", ONNX_PKG), volume, "-o", tmp_path / "out", "-q")
    assert result.exit_code == 1
    assert "the input has 3 dimensions (z=5, y=64, x=64) but the model takes 2D images" in result.output
    assert "--slices" in result.output


def test_wrong_number_of_channels(tmp_path):
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(
        rgb, np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8), photometric="rgb"
    )
    result = run("predict", shared("bioimageio_models", ONNX_PKG), rgb, "-o", tmp_path / "out", "-q")
    assert result.exit_code == 1
    assert "the model expects 1 channel(s)" in result.output and "convert it to grayscale" in result.output


def test_invalid_package(tmp_path, image):
    folder = tmp_path / "pkg"
    with zipfile.ZipFile(shared("bioimageio_models", ONNX_PKG)) as z:
        z.extractall(folder)
    rdf = folder / "rdf.yaml"
    rdf.write_text(
        rdf.read_text().replace("min: 32", "min: -3").replace("size: 512\n    id: y", "size: -5\n    id: y")
    )
    result = run("predict", folder, image)
    assert result.exit_code == 1
    assert "is not a valid bioimage.io model package: inputs.0.axes" in result.output
    assert "emzoo validate" in result.output
    result = run("validate", folder)
    assert result.exit_code == 1 and result.output.startswith("invalid")


def test_hash_mismatch(tmp_path, image):
    folder = tmp_path / "pkg"
    with zipfile.ZipFile(shared("bioimageio_models", ONNX_PKG)) as z:
        z.extractall(folder)
    onnx = folder / "weights.onnx"
    data = bytearray(onnx.read_bytes())
    data[-10] ^= 0xFF
    onnx.write_bytes(bytes(data))
    result = run("predict", folder, image, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "hash mismatch for weights.onnx" in result.output


@pytest.mark.parametrize("entry", ["../evil.txt", "/abs/evil.txt", "link"])
def test_unsafe_zip_entry(tmp_path, image, entry):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(shared("bioimageio_models", ONNX_PKG)) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        info = zipfile.ZipInfo(entry)
        if entry == "link":
            info.external_attr = 0o120777 << 16  # a symbolic link
        dst.writestr(info, "/etc/passwd")
    result = run("predict", bad, image)
    assert result.exit_code == 1
    assert "unsafe zip entry" in result.output
    assert not (tmp_path / "evil.txt").exists()


def test_zip_size_cap(tmp_path, image, monkeypatch):
    monkeypatch.setenv("EMZOO_MAX_PACKAGE_BYTES", "1000")
    zipped = tmp_path / "copy.zip"
    shutil.copy(shared("bioimageio_models", ONNX_PKG), zipped)
    with zipfile.ZipFile(zipped, "a") as z:  # new content: not unpacked in the cache before
        z.writestr("notes.txt", "a package that unpacks to more than 1000 bytes")
    result = run("info", zipped)
    assert result.exit_code == 1
    assert "more than the limit" in result.output and "EMZOO_MAX_PACKAGE_BYTES" in result.output


def test_weight_format_not_present(tmp_path, image):
    result = run(
        "predict",
        shared("bioimageio_models", TORCH_PKG),
        "--weights",
        "onnx",
        "--input",
        f"input0={image}",
        "--input",
        f"input1={image}",
    )
    assert result.exit_code == 1
    assert "has no onnx weights (it has: torchscript, pytorch_state_dict)" in result.output


def test_several_inputs_need_input_options(tmp_path, image):
    result = run("predict", shared("bioimageio_models", TORCH_PKG), image)
    assert result.exit_code == 2
    assert "--input input0=" in result.output


def test_bad_tile_option(tmp_path, image):
    result = run("predict", shared("bioimageio_models", ONNX_PKG), image, "--tile", "abc")
    assert result.exit_code == 2
    assert "--tile 'abc'" in result.output


def test_torch_missing_for_torch_weights(tmp_path, image):
    """In an environment without PyTorch, torch weights fail with the install command."""
    code = (
        "import sys; sys.modules['torch'] = None\n"  # makes `import torch` fail as if not installed
        "from emzoo.cli import main\n"
        f"main(['predict', r'{shared('bioimageio_models', TORCH_PKG)}', '--input', r'input0={image}',"
        f" '--input', r'input1={image}', '-o', r'{tmp_path / 'out'}'])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}, timeout=120
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "need PyTorch, which is not installed: pip install torch (or the [train] extra" in proc.stderr


def test_import_emzoo_stays_light():
    code = (
        "import sys, emzoo, emzoo.cli\n"
        "print(sorted(m for m in ('torch', 'onnxruntime', 'bioimageio.spec') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
