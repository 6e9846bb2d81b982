"""``emzoo predict --preview`` and ``--output-format png`` for float outputs: 8-bit pictures any viewer
shows (probabilities linear, other images percentile-stretched, a volume's middle slice), written like
the outputs; ``--overlay`` refused for models that do not count; failures name their input once.

End to end through the real CLI in subprocesses, with the tiny test package (sigmoid output) and the
denoising package of the zoo (an image output, values outside 0..1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from emzoo.io.preview import preview_pixels

REPO = Path(__file__).resolve().parents[2]
DENOISE = REPO / "zoo_models" / "em-denoise-n2v"


def emzoo(*args) -> subprocess.CompletedProcess:
    """``emzoo ARGS`` in a fresh process (stdout and stderr together, no traceback)."""
    proc = subprocess.run(
        [sys.executable, "-m", "emzoo", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    proc.output = proc.stdout + proc.stderr
    assert "Traceback" not in proc.output, proc.output
    return proc


def ok(*args) -> str:
    proc = emzoo(*args, "-q")
    assert proc.returncode == 0, proc.output
    assert "failed: 0" in proc.output, proc.output
    return proc.output


def png(path: Path) -> np.ndarray:
    with PILImage.open(path) as im:
        assert im.info.get("Software", "").startswith("emzoo ")  # emzoo's mark: never an input again
        return np.asarray(im)


def image_u8(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).gamma(2.0, 30.0, shape).clip(0, 255).astype(np.uint8)


@pytest.fixture
def a_tif(tmp_path) -> Path:
    path = tmp_path / "in" / "a.tif"
    path.parent.mkdir()
    tifffile.imwrite(path, image_u8((64, 80)))
    return path


def test_preview_of_a_probability_map_is_linear(tiny_unet2d, a_tif, tmp_path):
    out = tmp_path / "out"
    output = ok("predict", tiny_unet2d, a_tif, "-o", out, "--preview")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a_prob.preview.png", "a_prob.provenance.json", "a_prob.tif"]
    assert "previews: 1" in output
    prob = tifffile.imread(out / "a_prob.tif")
    preview = png(out / "a_prob.preview.png")
    assert preview.dtype == np.uint8 and preview.shape == prob.shape
    assert np.abs(preview.astype(int) - np.rint(prob * 255)).max() <= 1  # 0 -> 0, 0.5 -> 128, 1 -> 255
    assert preview_pixels(np.array([[0.5]]), "yx").item() == 128


def test_preview_of_an_image_output_is_a_percentile_stretch(a_tif, tmp_path):
    out = tmp_path / "out"
    ok("predict", DENOISE, a_tif, "-o", out, "--preview")
    denoised = tifffile.imread(out / "a_denoised.tif").astype(np.float64)
    assert denoised.min() < 0 or denoised.max() > 1  # not a probability: stretched, not linear
    lo, hi = np.percentile(denoised, [0.5, 99.5])
    expected = np.rint(np.clip((denoised - lo) / (hi - lo), 0, 1) * 255)
    preview = png(out / "a_denoised.preview.png")
    assert preview.dtype == np.uint8 and preview.min() == 0 and preview.max() == 255
    assert np.abs(preview.astype(int) - expected).max() <= 1


def test_previews_are_skipped_added_and_replaced_like_outputs(tiny_unet2d, a_tif, tmp_path):
    out = tmp_path / "out"
    ok("predict", tiny_unet2d, a_tif, "-o", out)
    output_time = (out / "a_prob.tif").stat().st_mtime_ns
    added = ok("predict", tiny_unet2d, a_tif, "-o", out, "--preview")  # drawn from the output on disk
    assert "done: 1" in added and (out / "a_prob.preview.png").is_file()
    assert (out / "a_prob.tif").stat().st_mtime_ns == output_time
    assert "skipped: 1" in ok("predict", tiny_unet2d, a_tif, "-o", out, "--preview")
    preview_time = (out / "a_prob.preview.png").stat().st_mtime_ns
    ok("predict", tiny_unet2d, a_tif, "-o", out, "--preview", "--overwrite")
    assert (out / "a_prob.preview.png").stat().st_mtime_ns > preview_time
    assert not [p for p in out.iterdir() if "partial" in p.name]  # written atomically


def test_preview_of_a_volume_is_its_middle_slice(tiny_unet2d, tmp_path):
    volume = tmp_path / "vol.tif"
    tifffile.imwrite(volume, np.stack([image_u8((64, 64), seed) for seed in range(5)]))
    out = tmp_path / "out"
    ok("predict", tiny_unet2d, volume, "--slices", "-o", out, "--preview")
    prob = tifffile.imread(out / "vol_prob.tif")
    assert prob.shape == (5, 64, 64)
    preview = png(out / "vol_prob.preview.png")
    assert np.abs(preview.astype(int) - np.rint(prob[2] * 255)).max() <= 1


def test_streamed_outputs_get_their_previews(tiny_unet2d, tmp_path):
    image = tmp_path / "big.tif"
    tifffile.imwrite(image, image_u8((160, 160)))
    out = tmp_path / "out"
    ok("predict", tiny_unet2d, image, "-o", out, "--preview", "--chunk-size", "64", "--output-format", "zarr")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["big_prob.ome.zarr", "big_prob.preview.png", "big_prob.provenance.json"]
    from emzoo.io import read_image

    prob = np.asarray(read_image(out / "big_prob.ome.zarr").data)
    assert np.abs(png(out / "big_prob.preview.png").astype(int) - np.rint(prob * 255)).max() <= 1


@pytest.mark.parametrize("stream", [False, True])
def test_png_output_of_a_float_model_is_converted(tiny_unet2d, a_tif, tmp_path, stream):
    ok("predict", tiny_unet2d, a_tif, "-o", tmp_path / "tif")
    extra = ("--stream", "--chunk-size", "64") if stream else ()
    ok("predict", tiny_unet2d, a_tif, "-o", tmp_path / "png", "--output-format", "png", *extra)
    prob = tifffile.imread(tmp_path / "tif" / "a_prob.tif")
    picture = png(tmp_path / "png" / "a_prob.png")
    assert picture.dtype == np.uint8 and picture.shape == prob.shape
    assert np.abs(picture.astype(int) - np.rint(prob * 255)).max() <= 1


def test_png_keeps_integer_labels_losslessly(tmp_path):
    from emzoo.io import ImageMeta, read_image, write_image
    from emzoo.io.write import check_writable, writable_dtype

    labels = np.arange(300 * 4, dtype=np.uint16).reshape(30, 40)
    write_image(tmp_path / "labels.png", labels, ImageMeta("yx"), format="png")
    assert np.array_equal(read_image(tmp_path / "labels.png").data, labels)
    assert writable_dtype("float32", "png") == np.uint8 and writable_dtype("uint16", "png") == np.uint16
    check_writable("png", "uint8")
    with pytest.raises(Exception, match="PNG holds uint8 or uint16 only, but the data is int32"):
        check_writable("png", "int32")


def test_overlay_for_a_model_that_does_not_count_is_refused(tiny_unet2d, a_tif, tmp_path):
    proc = emzoo("predict", tiny_unet2d, a_tif, "-o", tmp_path / "out", "--overlay")
    assert proc.returncode == 2, proc.output
    lines = [line for line in proc.output.splitlines() if "--overlay" in line]
    assert lines == ["Error: --overlay draws detected particles; tiny unet2d is not a counting model"]
    assert not (tmp_path / "out").exists()  # refused before any prediction


def test_failures_name_their_input_once(tiny_unet2d, tmp_path):
    odd = tmp_path / "some.xyz"
    odd.write_text("not an image")
    proc = emzoo("predict", tiny_unet2d, odd, "-o", tmp_path / "out")
    assert proc.returncode == 1, proc.output
    line = next(line for line in proc.output.splitlines() if "failed " in line and "some.xyz" in line)
    assert line.count("some.xyz") == 1, line
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "a.xyz").write_text("x")
    proc = emzoo("predict", tiny_unet2d, folder, "-o", tmp_path / "out")
    assert proc.returncode == 2, proc.output
    (line,) = [line for line in proc.output.splitlines() if "no image that emzoo reads" in line]
    assert line.count(str(folder)) == 1 and "it holds 1 file (.xyz)" in line, line
