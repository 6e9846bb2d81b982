"""Gatan DM3/DM4 through rosettasciio: a real STEM image with calibration, files without an image."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from emzoo.errors import InputError
from emzoo.io import read_image
from tests.conftest import shared


def test_real_dm3_image_with_calibration():
    image = read_image(shared("em_file_formats", "Se_implanted_MoS2.dm3"))
    assert not isinstance(image.data, np.ndarray)  # lazy (dask over a memory map)
    assert image.shape == (1024, 1024)
    assert image.data.dtype == np.uint32
    assert image.meta.axes == "yx"
    assert image.meta.unit == "nanometer"
    assert image.meta.pixel_size == pytest.approx({"x": 0.0127, "y": 0.0127}, abs=5e-5)
    assert image.meta.pixel_size["x"] == pytest.approx(0.0126953125)  # the exact value in the file
    assert image.meta.header["dataset"] == "SI Survey Image (active)"
    crop = np.asarray(image.data[:8, :8])
    assert crop.shape == (8, 8) and crop.any()


def test_dm3_whose_image_list_holds_only_the_thumbnail(tmp_path):
    """The real file with its ImageList cut to the first entry (the thumbnail, which rsciio skips)."""
    raw = bytearray(shared("em_file_formats", "Se_implanted_MoS2.dm3").read_bytes())
    tag = b"\x14\x00\x09ImageList"  # group tag, name length 9, name
    assert raw.count(tag) == 1
    count_at = raw.find(tag) + len(tag) + 2  # after the sorted/open flags: the number of entries
    assert struct.unpack(">I", raw[count_at : count_at + 4])[0] == 2
    raw[count_at : count_at + 4] = struct.pack(">I", 1)
    path = tmp_path / "thumbnail_only.dm3"
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="holds no image data") as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_truncated_dm3(tmp_path):
    path = tmp_path / "cut.dm4"
    path.write_bytes(shared("em_file_formats", "Se_implanted_MoS2.dm3").read_bytes()[:50_000])
    with pytest.raises(InputError, match=r"not a readable Digital Micrograph file.*truncated"):
        read_image(path)
