"""``emzoo predict`` with EM formats: output formats, calibration, slices and stacks, out-of-core
defaults, and bad input (one clear line, exit 1 or 2, no traceback, no output)."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from emzoo.cli import main
from emzoo.io import ImageMeta, read_image
from emzoo.io.formats.zarr_store import write_ome_zarr
from tests.conftest import shared


def run(*args) -> object:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def ok(*args):
    result = run(*args, "-q")
    assert result.exit_code == 0, result.output
    assert "failed: 0" in result.output
    return result


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def one_line_error(result, code: int, text: str) -> None:
    """Exit ``code``; ``text`` appears on exactly one line, which is the whole message."""
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if text in line]
    assert len(lines) == 1, result.output


def image_u8(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).gamma(2.0, 30.0, shape).clip(0, 255).astype(np.uint8)


# ------------------------------------------------------------------------- real EM files, calibration


@pytest.mark.parametrize("fmt", [None, "tiff"])
def test_mrc_micrograph_keeps_its_voxel_size(tiny_unet2d, tmp_path, fmt):
    src = shared("cryoem_micrographs", "epu2.9_example.mrc")
    extra = ["--output-format", fmt] if fmt else []
    ok("predict", tiny_unet2d, src, "-o", tmp_path, *extra)
    suffix = ".tif" if fmt else ".mrc"
    record = "epu2.9_example_prob.provenance.json"
    assert files_in(tmp_path) == sorted([f"epu2.9_example_prob{suffix}", record])
    out = read_image(tmp_path / f"epu2.9_example_prob{suffix}")
    original = read_image(src)
    assert out.shape == original.shape == (4096, 4096)
    assert out.meta.unit == "angstrom"
    assert out.meta.pixel_size["x"] == pytest.approx(original.meta.pixel_size["x"], rel=1e-5)
    assert out.meta.pixel_size["y"] == pytest.approx(original.meta.pixel_size["y"], rel=1e-5)
    assert original.meta.pixel_size["x"] == pytest.approx(0.6666, abs=1e-3)


@pytest.mark.parametrize(("name", "nm"), [("Se_implanted_MoS2.dm3", 0.0127), ("Au_nanoparticle.emd", 0.0075)])
def test_stem_images_give_calibrated_tiffs(tiny_unet2d, tmp_path, name, nm):
    src = shared("em_file_formats", name)
    ok("predict", tiny_unet2d, src, "-o", tmp_path)
    out = read_image(tmp_path / f"{Path(name).stem}_prob.tif")
    original = read_image(src)
    assert out.meta.format == "tiff" and out.shape == original.shape
    assert out.meta.unit == original.meta.unit == "nanometer"
    assert out.meta.pixel_size == pytest.approx(original.meta.pixel_size, rel=1e-5)
    assert out.meta.pixel_size["x"] == pytest.approx(nm, rel=0.01)


def test_small_mrc_to_each_output_format(tiny_unet2d, tmp_path):
    with mrcfile.new(tmp_path / "mic.mrc") as mrc:
        mrc.set_data(image_u8((150, 130)).astype(np.int16))
        mrc.voxel_size = 2.0
    for fmt, suffix in [("tiff", ".tif"), ("mrc", ".mrc"), ("ome-zarr", ".ome.zarr"), ("npy", ".npy")]:
        ok("predict", tiny_unet2d, tmp_path / "mic.mrc", "-o", tmp_path / fmt, "--output-format", fmt)
        out = read_image(tmp_path / fmt / f"mic_prob{suffix}")
        assert out.shape == (150, 130)
        if fmt != "npy":  # .npy has no calibration
            assert out.meta.pixel_size == pytest.approx({"y": 2.0, "x": 2.0})
            assert out.meta.unit == "angstrom"
    a = np.asarray(read_image(tmp_path / "tiff" / "mic_prob.tif").data)
    b = np.asarray(read_image(tmp_path / "ome-zarr" / "mic_prob.ome.zarr").data)  # streamed
    assert float(np.max(np.abs(a - b))) < 1e-5


def test_zarr_input_gives_ome_zarr_output(tiny_unet2d, tmp_path):
    meta = ImageMeta("yx", {"y": 5.0, "x": 5.0}, "nm")
    write_ome_zarr(tmp_path / "im.ome.zarr", image_u8((200, 180)), meta)
    ok("predict", tiny_unet2d, tmp_path / "im.ome.zarr", "-o", tmp_path / "out")
    out = read_image(tmp_path / "out" / "im_prob.ome.zarr")
    assert out.meta.pixel_size == {"y": 5.0, "x": 5.0} and out.meta.unit == "nanometer"


def test_unknown_output_format_is_a_usage_error(tiny_unet2d, tmp_path):
    result = run("predict", tiny_unet2d, tmp_path, "--output-format", "jpeg2000")
    one_line_error(result, 2, "--output-format 'jpeg2000': emzoo writes mrc, npy, ome-zarr, png, tiff")


# ---------------------------------------------------------------------------------- volumes, slices


def test_slices_runs_a_2d_model_on_a_tiff_volume(tiny_unet2d, tmp_path):
    volume = image_u8((3, 100, 90))
    tifffile.imwrite(tmp_path / "vol.tif", volume, imagej=True, resolution=(0.5, 0.5),
                     metadata={"axes": "ZYX", "unit": "nm", "spacing": 40.0})  # fmt: skip
    ok("predict", tiny_unet2d, tmp_path / "vol.tif", "--slices", "-o", tmp_path / "out")
    out = read_image(tmp_path / "out" / "vol_prob.tif")
    assert out.meta.axes == "zyx" and out.shape == (3, 100, 90)
    assert out.meta.pixel_size == pytest.approx({"z": 40.0, "y": 2.0, "x": 2.0})


def test_stack_reads_a_folder_of_slices_as_one_volume(tiny_unet2d, tmp_path):
    folder = tmp_path / "section"
    folder.mkdir()
    volume = image_u8((4, 80, 70))
    for z in range(4):
        tifffile.imwrite(folder / f"s{z + 1:02d}.tif", volume[z])
    ok("predict", tiny_unet2d, folder, "--stack", "--slices", "-o", tmp_path / "out")
    assert files_in(tmp_path / "out") == ["section_prob.provenance.json", "section_prob.tif"]
    tifffile.imwrite(tmp_path / "vol.tif", volume, photometric="minisblack")
    ok("predict", tiny_unet2d, tmp_path / "vol.tif", "--slices", "-o", tmp_path / "ref")
    reference = read_image(tmp_path / "ref" / "vol_prob.tif").data
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "section_prob.tif").data, reference)
    # streamed slice by slice into OME-Zarr: the same values
    zarr_out = ["--output-format", "ome-zarr", "-o", tmp_path / "z"]
    ok("predict", tiny_unet2d, folder, "--stack", "--slices", *zarr_out)
    streamed = np.asarray(read_image(tmp_path / "z" / "section_prob.ome.zarr").data)
    assert float(np.max(np.abs(streamed - reference))) < 1e-5


def test_3d_model_on_a_volume(tiny_unet3d, tmp_path):
    tifffile.imwrite(tmp_path / "vol.tif", image_u8((20, 40, 36)), photometric="minisblack")
    ok("predict", tiny_unet3d, tmp_path / "vol.tif", "-o", tmp_path / "out")
    assert read_image(tmp_path / "out" / "vol_prob.tif").shape == (20, 40, 36)


# ------------------------------------------------------------------------------------------ bad input


def test_truncated_mrc(tiny_unet2d, tmp_path):
    with mrcfile.new(tmp_path / "mic.mrc") as mrc:
        mrc.set_data(image_u8((200, 200)).astype(np.int16))
    data = (tmp_path / "mic.mrc").read_bytes()
    (tmp_path / "mic.mrc").write_bytes(data[: len(data) // 2])
    result = run("predict", tiny_unet2d, tmp_path / "mic.mrc", "-o", tmp_path / "out", "-q")
    one_line_error(result, 1, "smaller than its header says")
    assert "truncated?" in result.output and files_in(tmp_path / "out") == []


def test_tiff_pages_of_different_shapes(tiny_unet2d, tmp_path):
    with tifffile.TiffWriter(tmp_path / "mixed.tif") as tif:
        tif.write(np.zeros((60, 64), np.uint8))
        tif.write(np.zeros((70, 52), np.uint8))
    result = run("predict", tiny_unet2d, tmp_path / "mixed.tif", "-o", tmp_path / "out", "-q")
    one_line_error(result, 1, "pages differ in shape")
    assert files_in(tmp_path / "out") == []


def test_zarr_path_that_does_not_exist(tiny_unet2d, tmp_path):
    result = run("predict", tiny_unet2d, tmp_path / "missing.ome.zarr", "-o", tmp_path / "out")
    one_line_error(result, 2, "missing.ome.zarr: no such file or folder")
    assert files_in(tmp_path / "out") == []


@pytest.mark.parametrize("kind", ["zarr", "tiff"])
def test_volume_for_a_2d_model_without_slices(tiny_unet2d, tmp_path, kind):
    volume = image_u8((3, 64, 64))
    if kind == "zarr":  # streams by default: fails before any store is created
        path = tmp_path / "vol.ome.zarr"
        write_ome_zarr(path, volume, ImageMeta("zyx"))
    else:
        path = tmp_path / "vol.tif"
        tifffile.imwrite(path, volume, photometric="minisblack")
    result = run("predict", tiny_unet2d, path, "-o", tmp_path / "out", "-q")
    one_line_error(result, 1, "the input has 3 dimensions (z=3, y=64, x=64) but the model takes 2D images")
    assert "(run it slice by slice with --slices)" in result.output
    assert files_in(tmp_path / "out") == []


def test_2d_image_for_a_3d_model(tiny_unet3d, tmp_path):
    tifffile.imwrite(tmp_path / "im.tif", image_u8((64, 64)))
    result = run("predict", tiny_unet3d, tmp_path / "im.tif", "-o", tmp_path / "out", "-q")
    one_line_error(result, 1, "the model expects a 3D volume")
    assert "the input has (y=64, x=64)" in result.output and files_in(tmp_path / "out") == []


def test_option_misuse_is_a_usage_error(tiny_unet2d, tiny_unet3d, tmp_path):
    tifffile.imwrite(tmp_path / "im.tif", image_u8((64, 64)))
    result = run("predict", tiny_unet3d, tmp_path / "im.tif", "--slices", "-o", tmp_path / "out")
    one_line_error(result, 2, "--slices runs a 2D model on each z slice, but this model takes 3D volumes")
    result = run("predict", tiny_unet2d, tmp_path / "im.tif", "--stack", "-o", tmp_path / "out")
    one_line_error(result, 2, "--stack reads folders of 2D slices, this is a file (leave out --stack)")
    result = run("predict", tiny_unet2d, tmp_path / "im.tif", "--no-stream", "--chunk-size", "256")
    one_line_error(result, 2, "--chunk-size is for out-of-core prediction: leave out --no-stream")
    assert files_in(tmp_path / "out") == []


def test_large_lazy_inputs_stream_by_default(tiny_unet2d, tmp_path, monkeypatch):
    from emzoo.drivers import files as batch
    from emzoo.drivers import streaming

    monkeypatch.setattr(batch, "STREAM_ABOVE_PIXELS", 10_000)
    chunks = []
    compute = streaming.ChunkRunner.compute

    def counting(self, job, stats=None):
        chunks.append(job)
        return compute(self, job, stats)

    monkeypatch.setattr(streaming.ChunkRunner, "compute", counting)
    with mrcfile.new(tmp_path / "mic.mrc") as mrc:  # memory-mapped when read: streamed, MRC out
        mrc.set_data(image_u8((300, 200)).astype(np.int16))
        mrc.voxel_size = 3.0
    tifffile.imwrite(tmp_path / "packed.tif", image_u8((300, 200)), compression="zlib")  # not mappable
    inputs = [tmp_path / "mic.mrc", tmp_path / "packed.tif"]
    ok("predict", tiny_unet2d, *inputs, "--chunk-size", "128", "-o", tmp_path / "o")
    assert len(chunks) == 3 * 2  # the MRC only
    records = ["mic_prob.provenance.json", "packed_prob.provenance.json"]
    assert files_in(tmp_path / "o") == sorted(["mic_prob.mrc", "packed_prob.tif", *records])
    with mrcfile.open(tmp_path / "o" / "mic_prob.mrc") as mrc:
        assert mrc.voxel_size.x == pytest.approx(3.0)
        streamed = mrc.data.copy()
    ok("predict", tiny_unet2d, tmp_path / "mic.mrc", "--no-stream", "-o", tmp_path / "m")
    with mrcfile.open(tmp_path / "m" / "mic_prob.mrc") as mrc:
        assert float(np.max(np.abs(mrc.data - streamed))) < 1e-5
