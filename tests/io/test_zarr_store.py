"""Zarr / OME-Zarr: lazy reading, NGFF metadata both ways, streaming output, broken stores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from emzoo.errors import InputError
from emzoo.io import ImageMeta, find_reader, read_image, write_image
from emzoo.io.formats.zarr_store import create_ome_zarr, finalize_ome_zarr


def test_round_trip_volume(tmp_path, rng):
    data = rng.random((5, 40, 50), dtype=np.float32)
    meta = ImageMeta("zyx", {"z": 50.0, "y": 4.0, "x": 4.0}, "nanometer")
    path = write_image(tmp_path / "vol.ome.zarr", data, meta, format="ome-zarr")
    assert path.is_dir()
    image = read_image(path)
    assert isinstance(image.data, zarr.Array)  # lazy: the array itself
    assert image.meta.axes == "zyx"
    assert image.meta.format == "ome-zarr"
    assert image.meta.unit == "nanometer"
    assert image.meta.pixel_size == pytest.approx({"z": 50.0, "y": 4.0, "x": 4.0})
    np.testing.assert_array_equal(image.data[:], data)
    attrs = json.loads((path / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4"
    assert ms["axes"] == [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    assert ms["datasets"][0]["coordinateTransformations"] == [{"type": "scale", "scale": [50.0, 4.0, 4.0]}]


def test_writer_chunks_512_in_plane(tmp_path):
    data = np.zeros((1100, 600), np.uint16)
    path = write_image(
        tmp_path / "big.ome.zarr", data, ImageMeta("yx", {"y": 1.0, "x": 1.0}, "angstrom"), format="ome-zarr"
    )
    array = read_image(path).data
    assert array.chunks == (512, 512)


def test_channels_last_are_written_in_ngff_order(tmp_path, rng):
    data = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    meta = ImageMeta("yxc", {"y": 0.5, "x": 0.5}, "micrometer")
    image = read_image(write_image(tmp_path / "rgb.ome.zarr", data, meta, format="ome-zarr"))
    assert image.meta.axes == "cyx"
    assert image.meta.pixel_size == pytest.approx({"y": 0.5, "x": 0.5})
    np.testing.assert_array_equal(np.moveaxis(image.data[:], 0, -1), data)


def test_missing_pixel_size_is_not_invented(tmp_path):
    meta = ImageMeta("zyx", {"y": 2.0, "x": 2.0}, "nanometer")  # z spacing unknown
    image = read_image(
        write_image(tmp_path / "v.ome.zarr", np.ones((2, 3, 4), np.float32), meta, format="ome-zarr")
    )
    assert image.meta.pixel_size == pytest.approx({"y": 2.0, "x": 2.0})


def test_ngff_05_zarr_v3_with_global_scale(tmp_path):
    path = tmp_path / "v05.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.create_array("s0", shape=(2, 16, 16), dtype="uint8", chunks=(1, 16, 16))
    group.create_array("s1", shape=(2, 8, 8), dtype="uint8", chunks=(1, 8, 8))
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "micrometer"} for n in "YX"
    ]
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": axes,
                "datasets": [
                    {"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.1, 0.1]}]},
                    {"path": "s1", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.2, 0.2]}]},
                ],
                "coordinateTransformations": [{"type": "scale", "scale": [1, 2.0, 2.0]}],
            }
        ],
    }
    image = read_image(path)
    assert image.meta.axes == "cyx"
    assert image.shape == (2, 16, 16)
    assert image.meta.unit == "micrometer"
    assert image.meta.pixel_size == pytest.approx({"y": 0.2, "x": 0.2})
    assert image.meta.header["levels"] == ["s0", "s1"]


def test_plain_zarr_array_gets_guessed_axes(tmp_path, rng):
    path = tmp_path / "plain"
    data = rng.random((6, 20, 30), dtype=np.float32)  # (<= 4, ...) would read as channels, like .npy
    array = zarr.create_array(str(path), shape=data.shape, dtype=data.dtype, chunks=(1, 20, 30))
    array[:] = data
    assert find_reader(path) is not None  # claimed through zarr.json, without a .zarr name
    image = read_image(path)
    assert image.meta.axes == "zyx"
    assert image.meta.format == "zarr"
    assert image.meta.pixel_size == {}
    np.testing.assert_array_equal(image.data[1], data[1])


def test_group_with_several_arrays_says_which_to_pass(tmp_path):
    path = tmp_path / "two.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("raw", shape=(4, 4), dtype="uint8")
    group.create_array("labels", shape=(4, 4), dtype="uint8")
    with pytest.raises(InputError, match=r"2 arrays \(labels, raw\).*pass the array to read"):
        read_image(path)
    assert read_image(path / "raw").meta.axes == "yx"


def test_streaming_output_is_unreadable_until_finalised(tmp_path):
    path = tmp_path / "pred.ome.zarr"
    meta = ImageMeta("yx", {"y": 0.667, "x": 0.667}, "angstrom")
    array = create_ome_zarr(path, (1000, 700), "float32", meta, chunks=(256, 256))
    assert array.chunks == (256, 256)
    for y in range(0, 1000, 256):
        array[y : y + 256, :] = y
    with pytest.raises(InputError, match="never finalised"):
        read_image(path)
    finalize_ome_zarr(array)
    finalize_ome_zarr(path)  # twice does no harm
    image = read_image(path)
    assert image.meta.pixel_size == pytest.approx({"y": 0.667, "x": 0.667})
    assert image.data[600, 5] == 512


def test_create_refuses_non_ngff_axis_order(tmp_path):
    with pytest.raises(InputError, match="not in OME-NGFF order"):
        create_ome_zarr(tmp_path / "x.ome.zarr", (4, 4, 3), "uint8", ImageMeta("yxc"))


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        read_image(tmp_path / "missing.ome.zarr")


def test_empty_zarr_folder(tmp_path):
    path = tmp_path / "empty.zarr"
    path.mkdir()
    with pytest.raises(InputError, match=r"not a Zarr store \(an empty folder\)"):
        read_image(path)


def test_broken_zarr_metadata(tmp_path):
    path = tmp_path / "broken.zarr"
    path.mkdir()
    (path / ".zgroup").write_text("{not json")
    with pytest.raises(InputError, match="broken Zarr store") as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_ordinary_folder_is_not_claimed(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    assert find_reader(tmp_path / "images") is None
