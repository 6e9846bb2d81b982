"""The reader: emzoo's formats as napari layers, with the pixel size as scale, lazily where the
format allows; None for what emzoo cannot read."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")

from pathlib import Path

import numpy as np
import tifffile

from emzoo.io.lookup import supported_suffixes
from emzoo.io.meta import ImageMeta
from emzoo.io.write import write_image
from emzoo.napari_plugin import reading
from emzoo.napari_plugin.layers import META_KEY
from emzoo.napari_plugin.reading import get_reader, read_layers
from tests.conftest import shared
from tests.napari_plugin.conftest import write_mrc


def _one(path):
    reader = get_reader(str(path))
    assert reader is not None
    layers = reader(str(path))
    assert len(layers) == 1
    return layers[0]


def test_mrc_has_its_voxel_size_as_scale_and_its_name(tmp_path, rng):
    path = write_mrc(tmp_path / "grid_square.mrc", rng.integers(0, 999, (3, 40, 50), dtype=np.int16), 2.5)
    data, kwargs, kind = _one(path)
    assert kind == "image" and kwargs["name"] == "grid_square"
    assert kwargs["scale"] == pytest.approx((2.5, 2.5, 2.5))
    assert kwargs["units"] == ("angstrom",) * 3
    assert kwargs["metadata"][META_KEY]["axes"] == "zyx"
    assert isinstance(data, np.memmap)  # not read into memory


def test_dm3_has_its_calibration():
    path = shared("em_file_formats", "Se_implanted_MoS2.dm3")
    data, kwargs, _ = _one(path)
    assert data.shape == (1024, 1024) and not isinstance(data, np.ndarray)
    assert kwargs["scale"] == pytest.approx((0.0127, 0.0127), rel=0.01)
    assert kwargs["units"] == ("nanometer", "nanometer")


def test_ome_zarr_is_read_lazily_with_its_scale(tmp_path, rng):
    path = tmp_path / "volume.ome.zarr"
    meta = ImageMeta("zyx", {"z": 8.0, "y": 2.0, "x": 2.0}, "nanometer")
    write_image(path, rng.random((4, 32, 48), dtype=np.float32), meta, format="ome-zarr")
    data, kwargs, _ = _one(path)
    assert type(data).__module__.split(".")[0] in ("zarr", "dask")
    assert data.shape == (4, 32, 48)
    assert kwargs["scale"] == pytest.approx((8.0, 2.0, 2.0))
    assert kwargs["name"] == "volume"


def test_a_folder_of_slices_is_one_lazy_volume(tmp_path, rng):
    folder = tmp_path / "series"
    folder.mkdir()
    slices = rng.integers(0, 255, (3, 20, 30), dtype=np.uint8)
    for i, plane in enumerate(slices):
        tifffile.imwrite(folder / f"slice_{i + 1}.tif", plane)
    data, kwargs, _ = _one(folder)
    assert type(data).__module__.startswith("dask")
    assert kwargs["name"] == "series" and kwargs["metadata"][META_KEY]["axes"] == "zyx"
    np.testing.assert_array_equal(np.asarray(data), slices)


def test_a_folder_of_unlike_images_gives_one_layer_each(tmp_path, rng):
    tifffile.imwrite(tmp_path / "a.tif", rng.integers(0, 255, (20, 30), dtype=np.uint8))
    tifffile.imwrite(tmp_path / "b.tif", rng.integers(0, 255, (10, 10), dtype=np.uint8))
    layers = read_layers(str(tmp_path))
    assert [kw["name"] for _, kw, _ in layers] == ["a", "b"]


def test_what_emzoo_cannot_read_gives_none(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "missing.mrc")) is None
    assert get_reader(str(tmp_path / "empty")) is None
    assert get_reader([str(tmp_path / "notes.txt"), str(tmp_path / "empty")]) is None


def test_the_manifest_claims_every_suffix_emzoo_reads():
    import yaml

    manifest = yaml.safe_load((Path(reading.__file__).parent / "napari.yaml").read_text())
    patterns = set(manifest["contributions"]["readers"][0]["filename_patterns"])
    assert {f"*{s}" for s in supported_suffixes()} <= patterns
