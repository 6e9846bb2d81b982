"""``emzoo predict`` finds bad options before any work (usage errors, exit 2) and refuses garbage in
(non-finite images, images beyond memory) instead of predicting garbage out with exit 0."""

from __future__ import annotations

import os
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from emzoo.cli import main


def run(*args) -> object:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def one_line_error(result, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    assert len([line for line in result.output.splitlines() if text in line]) == 1, result.output


def image_u8(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).gamma(2.0, 30.0, shape).clip(0, 255).astype(np.uint8)


@pytest.fixture
def unreadable(tmp_path) -> Path:
    """An input that fails (exit 1) as soon as it is read: a usage error (exit 2) comes before."""
    path = tmp_path / "broken.tif"
    path.write_text("not a tiff")
    return path


# ----------------------------------------------------------------- options: before the model loads


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (("--blend", "-40"), "--blend -40: must be 0 or more"),
        (("--halo", "-5"), "--halo -5: must be 0 or more"),
        (("--tile", "0"), "--tile '0': sizes must be positive"),
        (("--device", "banana"), "--device 'banana': use auto, cpu, cuda or cuda:N"),
    ],
)
def test_bad_values_are_usage_errors_before_the_model_loads(tmp_path, unreadable, option, message):
    result = run("predict", tmp_path / "no-such-model.zip", unreadable, *option, "-o", tmp_path / "out")
    one_line_error(result, 2, message)  # a missing model would be exit 1: it was not opened
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------- options: after the model loads, before inputs


@pytest.mark.parametrize(
    ("tile", "message"),
    [
        ("102", "--tile 102: the model takes 52+4k px along y; use 104"),
        ("56,56,56,56", "--tile takes 1 or 2 sizes for this model, got 4"),
        ("4", "--tile 4: the model takes 52+4k px along y; use 52"),
        ("56,54", "--tile 54: the model takes 52+4k px along x; use 56"),
    ],
)
def test_tile_sizes_the_model_does_not_take(tiny_unet2d, tmp_path, unreadable, tile, message):
    result = run("predict", tiny_unet2d, unreadable, "--tile", tile, "-o", tmp_path / "out")
    one_line_error(result, 2, message)
    assert "failed" not in result.output and not (tmp_path / "out").exists()


def test_a_tile_the_model_takes_still_works(tiny_unet2d, tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", image_u8((150, 150)))
    result = run("predict", tiny_unet2d, tmp_path / "a.tif", "--tile", "104", "-o", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output


def test_the_python_api_checks_the_options_too(predictor2d, tmp_path):
    from emzoo.drivers.files import predict_samples
    from emzoo.drivers.options import OutputOptions, RunOptions
    from emzoo.errors import UsageError

    with pytest.raises(
        UsageError, match=r"^overlay draws detected particles; tiny unet2d is not a counting model"
    ):
        predict_samples(predictor2d, [], tmp_path, options=RunOptions(OutputOptions(overlay=True)))


# ----------------------------------------------------------------------------------- garbage in


def test_non_finite_images_are_refused(tiny_unet2d, tmp_path):
    tifffile.imwrite(tmp_path / "nan.tif", np.full((64, 64), np.nan, np.float32))
    inf = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    inf[3, 3], inf[5, 9] = np.inf, -np.inf
    tifffile.imwrite(tmp_path / "inf.tif", inf, compression="zlib")  # in memory, not memory-mapped
    tifffile.imwrite(tmp_path / "good.tif", image_u8((64, 64)))
    files = [tmp_path / n for n in ("nan.tif", "inf.tif", "good.tif")]
    for extra in ([], ["--stream"]):
        out = tmp_path / f"out{len(extra)}"
        result = run("predict", tiny_unet2d, *files, "-o", out, "-q", *extra)
        assert result.exit_code == 1, result.output
        assert "done: 1, skipped: 0, failed: 2" in result.output
        assert "RuntimeWarning" not in result.output
        refused = [line for line in result.output.splitlines() if "NaN or ±Inf" in line]
        assert len(refused) == 2 and "nan.tif" in refused[0] and "inf.tif" in refused[1]
        if not extra:  # streamed: the first chunk with such pixels is named instead
            one_line_error(result, 1, "nan.tif: all pixels are NaN or ±Inf")
            one_line_error(result, 1, "inf.tif: 2 of 4096 pixels are NaN or ±Inf")
        # no output, no partial store of the others (good's provenance record beside its output)
        assert sorted(os.listdir(out)) == ["good_prob.provenance.json", "good_prob.tif"]


def _sparse_mrc(path: Path, nx: int, ny: int, nz: int, *, sparse: bool) -> None:
    """An MRC file whose header claims nx x ny x nz float32; the data block sparse (or missing)."""
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.zeros((8, 8), np.float32))
    data = bytearray(path.read_bytes()[:1024])
    data[0:12] = np.array([nx, ny, nz], "<i4").tobytes()
    data[28:40] = np.array([nx, ny, nz], "<i4").tobytes()
    path.write_bytes(bytes(data))
    if sparse:
        os.truncate(path, 1024 + nx * ny * nz * 4)


def test_an_image_beyond_memory_is_refused_before_allocating(tiny_unet2d, tmp_path, monkeypatch):
    from emzoo.io import limits

    monkeypatch.setattr(limits, "available_memory", lambda: 8 * 10**9)
    _sparse_mrc(tmp_path / "huge.mrc", 65536, 65536, 1, sparse=True)  # 16 GiB of holes
    result = run("predict", tiny_unet2d, tmp_path / "huge.mrc", "--no-stream", "-o", tmp_path / "out", "-q")
    one_line_error(result, 1, "huge.mrc: predicting it in memory needs about 34.4 GB of memory, 8.0 GB are")
    assert "out of core (--stream)" in result.output


@pytest.mark.parametrize("dims", [(2**21, 2**21, 2**22), (2**31 - 1, 2**31 - 1, 2**31 - 1)])
def test_an_mrc_header_that_overflows(tiny_unet2d, tmp_path, dims):
    """2**21 x 2**21 x 2**22 float32 is 2**66 bytes: 0 in 64-bit arithmetic, which looked consistent
    with a 1024-byte file (then: "'NoneType' object has no attribute 'ndim'")."""
    _sparse_mrc(tmp_path / "bad.mrc", *dims, sparse=False)
    result = run("predict", tiny_unet2d, tmp_path / "bad.mrc", "-o", tmp_path / "out", "-q")
    one_line_error(result, 1, "bad.mrc: file is smaller than its header says (1024 bytes, expected ")
    assert f"{dims[2]}x{dims[1]}x{dims[0]} float32" in result.output
    assert "NoneType" not in result.output
