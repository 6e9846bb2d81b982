"""Velox EMD and TIA SER through rosettasciio: dataset choice, calibration, files without an image."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest

from emzoo.errors import InputError
from emzoo.io import read_image
from tests.conftest import shared


def test_real_velox_emd():
    image = read_image(shared("em_file_formats", "Au_nanoparticle.emd"))
    assert not isinstance(image.data, np.ndarray)  # lazy (dask over HDF5)
    assert image.shape == (2048, 2048)
    assert image.data.dtype == np.uint16
    assert image.meta.axes == "yx"
    assert image.meta.unit == "nanometer"
    assert image.meta.pixel_size == pytest.approx({"x": 0.0075, "y": 0.0075}, abs=5e-5)
    assert image.meta.header["dataset"] == "HAADF"
    assert image.meta.header["dataset_index"] == 0
    assert image.meta.header["datasets"] == ["'HAADF' image 2048x2048 uint16"]


def test_emd_without_an_image(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "no_image.emd"
    shutil.copyfile(shared("em_file_formats", "Au_nanoparticle.emd"), path)
    with h5py.File(path, "r+") as f:
        del f["Data/Image"]
    with pytest.raises(InputError, match="holds no image data") as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_not_an_emd_file(tmp_path):
    path = tmp_path / "cut.emd"
    path.write_bytes(shared("em_file_formats", "Au_nanoparticle.emd").read_bytes()[:100_000])
    with pytest.raises(InputError, match="not a readable EMD file"):
        read_image(path)


def _write_ser_image(path, image: np.ndarray, pixel_m: float) -> None:
    """A one-image TIA series file (SeriesVersion 0x210), laid out as rosettasciio's reader expects.

    No real .ser file is available here. TIA stores calibrations in meters and rows bottom-up.
    """
    description, units = b"Number", b""
    dim = struct.pack("<IddII", 1, 0.0, 1.0, 0, len(description)) + description
    dim += struct.pack("<I", len(units)) + units
    header_len = 30 + len(dim)
    offsets_at = header_len
    data_at = offsets_at + 8
    header = struct.pack("<HHHIIIIII", 0x4949, 0x0197, 0x0210, 0x4122, 0x4152, 1, 1, offsets_at, 1)
    ny, nx = image.shape
    element = struct.pack("<ddIddIHII", 0.0, pixel_m, 0, 0.0, pixel_m, 0, 2, nx, ny)  # DataType 2 = uint16
    element += image[::-1].astype("<u2").tobytes()
    tag_at = data_at + len(element)
    tag = struct.pack("<HHI", 0x4152, 0, 0)
    path.write_bytes(header + dim + struct.pack("<II", data_at, tag_at) + element + tag)


def test_synthetic_ser_image_with_calibration(tmp_path, rng):
    data = rng.integers(0, 4000, (24, 32), dtype=np.uint16)
    path = tmp_path / "image_1.ser"
    _write_ser_image(path, data, 2.5e-10)
    image = read_image(path)
    assert image.meta.axes == "yx"
    assert image.meta.format == "ser"
    assert image.meta.unit == "nanometer"
    assert image.meta.pixel_size == pytest.approx({"x": 0.25, "y": 0.25})
    np.testing.assert_array_equal(np.asarray(image.data), data)


def test_damaged_ser(tmp_path):
    path = tmp_path / "bad.ser"
    path.write_bytes(b"\x49\x49" + b"\0" * 20)
    with pytest.raises(InputError, match=r"not a readable TIA \.ser file"):
        read_image(path)
