"""The TIFF reader/writer against EM needs: calibrated float images, pages that do not stack."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from emzoo.errors import InputError
from emzoo.io import ImageMeta, read_image, write_image


def test_float32_round_trip_keeps_the_nanometer_pixel_size(tmp_path, rng):
    data = rng.random((30, 40), dtype=np.float32)
    meta = ImageMeta("yx", {"y": 0.85, "x": 0.85}, "nanometer")
    image = read_image(write_image(tmp_path / "im.tif", data, meta, format="tiff"))
    assert image.meta.axes == "yx"
    assert image.data.dtype == np.float32
    assert image.meta.unit == "nanometer"
    assert image.meta.pixel_size == pytest.approx({"y": 0.85, "x": 0.85}, rel=1e-6)
    np.testing.assert_array_equal(image.data, data)


def test_pages_of_different_shapes_give_a_clear_error(tmp_path):
    path = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.zeros((10, 12), np.uint8))
        tif.write(np.zeros((20, 8), np.uint8))
    with pytest.raises(InputError, match="pages differ in shape") as err:
        read_image(path)
    assert str(path) in str(err.value)
