"""``emzoo info OUTPUT`` through the real CLI in a subprocess: how an output was made, read back from
its provenance record (beside it, or in an OME-Zarr store's attributes)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

REPO = Path(__file__).resolve().parents[2]


def emzoo(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emzoo", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def predicted(tiny_unet2d, tmp_path_factory) -> Path:
    """in/a.tif predicted into out/ (TIFF with a preview) and zarr/ (a streamed OME-Zarr store)."""
    folder = tmp_path_factory.mktemp("info-outputs")
    (folder / "in").mkdir()
    data = np.random.default_rng(0).gamma(2.0, 30.0, (96, 96)).clip(0, 255).astype(np.uint8)
    tifffile.imwrite(folder / "in" / "a.tif", data)
    for args in (("-o", "out", "--preview"), ("-o", "zarr", "--output-format", "ome-zarr")):
        done = emzoo("predict", tiny_unet2d, "in/a.tif", *args, "-q", cwd=folder)
        assert done.returncode == 0, done.stdout + done.stderr
    return folder


TARGETS = ["out/a_prob.tif", "out/a_prob.preview.png", "out/a_prob.provenance.json", "zarr/a_prob.ome.zarr"]


@pytest.mark.parametrize("target", TARGETS)
def test_info_shows_how_an_output_was_made(predicted, tiny_unet2d, target):
    result = emzoo("info", target, cwd=predicted)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    model_sha = hashlib.sha256(Path(tiny_unet2d).read_bytes()).hexdigest()
    input_sha = hashlib.sha256((predicted / "in" / "a.tif").read_bytes()).hexdigest()
    assert text.splitlines()[0].startswith(f"{target}") and "predicted by tiny unet2d" in text
    assert f"sha256 {model_sha[:12]}... of the package zip" in text
    assert f"input raw: {predicted / 'in' / 'a.tif'} [yx 96x96 uint8]" in text
    assert f"sha256 {input_sha[:12]}... of the file" in text
    assert "runtime: onnxruntime on cpu (CPUExecutionProvider), fp32, tta off; tile " in text
    assert "raw: scale_range (1-99 percentile): lower " in text
    assert "out of distribution: no" in text and "versions: emzoo " in text
    assert "Traceback" not in result.stderr


def test_info_reads_a_store_without_its_sidecar(predicted, tmp_path):
    """The store's attributes hold the record too: a store moved alone still says how it was made."""
    import shutil

    shutil.copytree(predicted / "zarr" / "a_prob.ome.zarr", tmp_path / "moved.ome.zarr")
    result = emzoo("info", tmp_path / "moved.ome.zarr", cwd=predicted)
    assert result.returncode == 0, result.stderr
    assert "predicted by tiny unet2d" in result.stdout and "out of core: 1 chunk(s)" in result.stdout


def test_info_on_an_image_without_a_record_is_one_line(predicted):
    result = emzoo("info", "in/a.tif", cwd=predicted)
    assert result.returncode == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "in/a.tif: an image without a provenance record" in lines[0], lines


def test_info_on_a_broken_record_is_one_line(predicted, tmp_path):
    broken = tmp_path / "x_prob.provenance.json"
    broken.write_text(json.dumps({"not": "a record"}))
    result = emzoo("info", broken, cwd=predicted)
    assert result.returncode == 1 and "not a provenance record" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_info_on_a_package_is_unchanged(predicted, tiny_unet2d):
    result = emzoo("info", tiny_unet2d, cwd=predicted)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("tiny unet2d (version 0.1.0)") and "weights onnx:" in result.stdout
