"""MRC reader and writer: real cryo-EM micrographs and EMDB maps, round trips, damaged files."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from emzoo.errors import InputError
from emzoo.io import ImageMeta, read_image, write_image
from tests.conftest import shared


def test_epu_micrograph_is_lazy_with_its_pixel_size():
    path = shared("cryoem_micrographs", "epu2.9_example.mrc")
    image = read_image(path)
    assert isinstance(image.data, np.memmap)  # memory-mapped, not loaded
    assert image.shape == (4096, 4096)
    assert image.data.dtype == np.uint16
    assert image.meta.axes == "yx"
    assert image.meta.unit == "angstrom"
    assert image.meta.pixel_size == pytest.approx({"x": 0.667, "y": 0.667}, abs=5e-4)
    assert image.meta.header["extended_header"] == "FEI2"
    # one row against the raw bytes after the 1024-byte header and the extended header
    offset = 1024 + image.meta.header["extended_header_bytes"] + 100 * 4096 * 2
    row = np.fromfile(path, dtype="<u2", count=4096, offset=offset)
    np.testing.assert_array_equal(image.data[100], row)


def test_fei_extended_micrograph():
    image = read_image(shared("cryoem_micrographs", "fei-extended.mrc"))
    assert image.shape == (3838, 3710)
    assert image.meta.axes == "yx"
    assert image.meta.pixel_size == pytest.approx({"x": 0.854, "y": 0.854}, abs=5e-4)
    assert image.meta.header["extended_header"] == "FEI1"


def test_emdb_map_volume():
    image = read_image(shared("cryoem_micrographs", "EMD-3197.map"))
    assert image.meta.axes == "zyx"
    assert image.shape == (20, 20, 20)
    assert image.data.dtype == np.float32
    assert image.meta.pixel_size == pytest.approx({"z": 11.4, "y": 11.4, "x": 11.4})
    assert image.meta.unit == "angstrom"


def test_emdb_map_with_permuted_axes_comes_back_in_physical_zyx_order():
    path = shared("cryoem_micrographs", "EMD-3001.map")  # mapc, mapr, maps = 3, 1, 2 (columns are z)
    image = read_image(path)
    assert image.meta.header["axis_order"] == (3, 1, 2)
    assert image.meta.axes == "zyx"
    assert image.shape == (73, 25, 43)
    assert image.meta.pixel_size == pytest.approx(
        {"x": 17.93 / 40, "y": 4.71 / 12, "z": 33.03 / 72}, rel=1e-5
    )
    stored = mrcfile.read(path)  # (sections=y, rows=x, columns=z)
    np.testing.assert_array_equal(image.data, stored.transpose(2, 0, 1))


def test_truncated_mrc_names_the_file_and_the_problem(tmp_path):
    src = shared("cryoem_micrographs", "fei-extended.mrc")
    cut = tmp_path / "cut.mrc"
    with open(src, "rb") as f:
        cut.write_bytes(f.read(2_000_000))
    with pytest.raises(InputError, match=r"smaller than its header says.*truncated") as err:
        read_image(cut)
    assert str(cut) in str(err.value)


def test_shorter_than_a_header(tmp_path):
    path = tmp_path / "tiny.mrc"
    path.write_bytes(b"\0" * 500)
    with pytest.raises(InputError, match="smaller than the 1024-byte MRC header"):
        read_image(path)


def test_not_an_mrc_file(tmp_path, rng):
    path = tmp_path / "noise.mrc"
    path.write_bytes(rng.integers(0, 255, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="not an MRC file"):
        read_image(path)


def test_unknown_mode(tmp_path):
    path = tmp_path / "mode.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((4, 5), np.float32))
    raw = bytearray(path.read_bytes())
    raw[12:16] = (99).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="data mode 99"):
        read_image(path)


def test_round_trip_volume_converts_the_pixel_size_to_angstrom(tmp_path, rng):
    data = rng.random((6, 30, 40), dtype=np.float32)
    meta = ImageMeta("zyx", {"z": 5.0, "y": 1.25, "x": 1.25}, "nanometer")
    path = write_image(tmp_path / "vol.mrc", data, meta, format="mrc")
    with mrcfile.open(path) as mrc:  # the file itself says Å
        assert float(mrc.voxel_size.x) == pytest.approx(12.5)
    image = read_image(path)
    assert image.meta.axes == "zyx"
    assert image.meta.unit == "angstrom"
    assert image.meta.pixel_size == pytest.approx({"z": 50.0, "y": 12.5, "x": 12.5})
    np.testing.assert_array_equal(image.data, data)


@pytest.mark.parametrize(
    ("dtype", "stored"),
    [
        ("float32", "float32"),
        ("int16", "int16"),
        ("uint16", "uint16"),
        ("int8", "int8"),
        ("uint8", "uint16"),  # MRC mode 0 is signed: uint8 is widened, values kept
        ("bool", "uint16"),
        ("float64", "float32"),
        ("int32", "int16"),  # values that fit are stored in the smallest MRC integer type
    ],
)
def test_round_trip_dtypes(tmp_path, rng, dtype, stored):
    data = (rng.random((20, 30)) * 100).astype(dtype)
    path = write_image(
        tmp_path / "im.mrc", data, ImageMeta("yx", {"y": 0.5, "x": 0.5}, "angstrom"), format="mrc"
    )
    image = read_image(path)
    assert image.meta.axes == "yx"
    assert image.data.dtype == np.dtype(stored)
    np.testing.assert_array_equal(image.data, data.astype(stored))
    assert image.meta.pixel_size == pytest.approx({"y": 0.5, "x": 0.5})


def test_image_stack_has_no_z_spacing(tmp_path):
    data = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    meta = ImageMeta("zyx", {"y": 1.1, "x": 1.1}, "angstrom", header={"image_stack": True})
    path = write_image(tmp_path / "particles.mrcs", data, meta, format="mrc")
    image = read_image(path)
    assert image.meta.axes == "zyx"
    assert image.meta.header["image_stack"] is True
    assert image.meta.pixel_size == pytest.approx({"y": 1.1, "x": 1.1})
    np.testing.assert_array_equal(image.data, data)


def test_writer_refuses_channels(tmp_path):
    with pytest.raises(InputError, match="not axes 'yxc'"):
        write_image(tmp_path / "rgb.mrc", np.zeros((4, 4, 3), np.uint8), ImageMeta("yxc"), format="mrc")
    assert not (tmp_path / "rgb.mrc").exists()


def test_without_a_pixel_size(tmp_path):
    path = write_image(tmp_path / "plain.mrc", np.ones((8, 9), np.float32), ImageMeta("yx"), format="mrc")
    image = read_image(path)
    assert image.meta.pixel_size == {}
    assert image.meta.unit is None


def test_imod_unsigned_bytes(tmp_path):
    """IMOD's mode-0 files hold unsigned bytes unless its flags say signed (mrcfile reads int8)."""
    values = np.array([[0, 100, 200, 255]], dtype=np.uint8)
    path = tmp_path / "bytes.rec"
    with mrcfile.new(path) as mrc:
        mrc.set_data(values.view(np.int8))
    raw = bytearray(path.read_bytes())
    raw[152:156] = (1146047817).to_bytes(4, "little")  # IMOD stamp, flags 0: unsigned
    path.write_bytes(bytes(raw))
    image = read_image(path)
    assert image.data.dtype == np.uint8
    np.testing.assert_array_equal(image.data, values)
