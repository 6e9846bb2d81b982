"""Folders of numbered 2D slices read as one lazy volume."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from emzoo.errors import InputError
from emzoo.io import ImageMeta, find_reader, read_image, read_slice_folder, write_image
from tests.conftest import shared


def test_real_png_slices_in_natural_order():
    folder = shared("isbi2012_membranes", "train", "image")
    image = read_slice_folder(folder)
    stack = image.data
    assert image.meta.axes == "zyx"
    assert (stack.shape, stack.dtype, stack.ndim, len(stack)) == ((25, 512, 512), np.uint8, 3, 25)
    assert image.meta.header["files"][:12] == [f"{i}.png" for i in range(12)]  # 2 before 10
    np.testing.assert_array_equal(stack[10], read_image(folder / "10.png").data)
    assert stack[3:5, :2, :3].shape == (2, 2, 3)
    assert stack[..., 0].shape == (25, 512)
    assert stack[[0, 24], 7].shape == (2, 512)
    assert find_reader(folder) is None  # a folder of slices is a batch unless the user asks for a stack


def _write_slices(folder, names_values, shape=(6, 7), dtype=np.uint16):
    folder.mkdir(exist_ok=True)
    for name, value in names_values:
        tifffile.imwrite(folder / name, np.full(shape, value, dtype))


def test_numbers_sort_by_value(tmp_path):
    _write_slices(tmp_path / "s", [("s10.tif", 10), ("s2.tif", 2), ("s1.tif", 1), (".hidden.tif", 99)])
    (tmp_path / "s" / "notes.txt").write_text("not an image")
    stack = read_slice_folder(tmp_path / "s").data
    np.testing.assert_array_equal(stack[:, 0, 0], [1, 2, 10])
    np.testing.assert_array_equal(np.asarray(stack)[2], np.full((6, 7), 10))


def test_only_the_needed_slices_are_read(tmp_path, rng):
    folder = tmp_path / "png"
    folder.mkdir()
    for i in range(3):
        PILImage.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(folder / f"{i}.png")
    broken = folder / "2.png"
    broken.write_bytes(broken.read_bytes()[:60])  # header intact, pixels cut off
    stack = read_slice_folder(folder).data  # headers only: no error yet
    assert stack[0:2].shape == (2, 16, 16)
    with pytest.raises(InputError, match=r"2\.png"):
        stack[2]


def test_slices_of_different_shapes(tmp_path):
    folder = tmp_path / "s"
    _write_slices(folder, [("1.tif", 1), ("2.tif", 2)])
    tifffile.imwrite(folder / "3.tif", np.zeros((6, 8), np.uint16))
    with pytest.raises(InputError, match=r"same shape and dtype.*6x8 uint16 \(e.g. 3.tif\)"):
        read_slice_folder(folder)


def test_slices_of_different_dtypes(tmp_path):
    folder = tmp_path / "s"
    _write_slices(folder, [("1.tif", 1), ("2.tif", 2)])
    tifffile.imwrite(folder / "3.tif", np.zeros((6, 7), np.float32))
    with pytest.raises(InputError, match="same shape and dtype"):
        read_slice_folder(folder)


def test_mixed_formats(tmp_path):
    folder = tmp_path / "s"
    _write_slices(folder, [("1.tif", 1), ("2.tiff", 2)])
    PILImage.fromarray(np.zeros((6, 7), np.uint8)).save(folder / "3.png")
    with pytest.raises(InputError, match=r"one image format, this one has 1 \.png, 2 \.tif"):
        read_slice_folder(folder)


def test_pixel_size_from_the_first_tiff_slice(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    meta = ImageMeta("yx", {"y": 4.0, "x": 4.0}, "nanometer")
    for i in range(2):
        write_image(folder / f"z{i}.tif", np.full((5, 5), i, np.uint8), meta)
    image = read_slice_folder(folder)
    assert image.meta.unit == "nanometer"
    assert image.meta.pixel_size == pytest.approx({"y": 4.0, "x": 4.0})


def test_not_a_folder(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        read_slice_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no image file"):
        read_slice_folder(tmp_path / "empty")
