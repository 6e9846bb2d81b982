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


def test_a_tiff_whose_pages_loop_is_refused_at_once(tmp_path):
    """A next-page offset pointing back into the chain made tifffile walk pages for ever (fuzz find)."""
    import struct
    import time

    import numpy as np
    import pytest
    import tifffile

    from emzoo.errors import InputError
    from emzoo.io import read_image

    path = tmp_path / "loop.tif"
    tifffile.imwrite(path, np.zeros((2, 8, 8), np.uint8))
    raw = bytearray(path.read_bytes())
    first = struct.unpack_from("<I", raw, 4)[0]
    n_tags = struct.unpack_from("<H", raw, first)[0]
    second = struct.unpack_from("<I", raw, first + 2 + 12 * n_tags)[0]
    n_second = struct.unpack_from("<H", raw, second)[0]
    struct.pack_into("<I", raw, second + 2 + 12 * n_second, first)  # page 2 -> page 1 again
    path.write_bytes(bytes(raw))
    start = time.perf_counter()
    with pytest.raises(InputError, match="damaged TIFF: its chain of pages loops"):
        read_image(path)
    assert time.perf_counter() - start < 5
