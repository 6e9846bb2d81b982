"""The writer: image and labels layers to TIFF, MRC and OME-Zarr through emzoo's writers, read back
with the layer's scale as the pixel size."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")

import numpy as np
from napari.components import ViewerModel

from emzoo.errors import UsageError
from emzoo.io.lookup import read_image
from emzoo.io.units import convert
from emzoo.io.write import written_by_emzoo
from emzoo.napari_plugin.reading import read_layers
from emzoo.napari_plugin.writing import write_layer


@pytest.mark.parametrize("name", ["out.tif", "out.mrc", "out.ome.zarr"])
def test_an_image_layer_round_trips_with_its_scale(plugins, tmp_path, rng, name):
    viewer = ViewerModel()
    data = rng.random((3, 24, 32), dtype=np.float32)
    layer = viewer.add_image(data, name="vol", scale=(10.0, 2.0, 2.0), units=("nm", "nm", "nm"))
    path = tmp_path / name
    written = layer.save(str(path), plugin="emzoo")  # napari -> npe2 -> the plugin's writer
    assert written == [str(path)] and written_by_emzoo(path)
    back_data, back, _ = read_layers(str(path))[0]
    np.testing.assert_allclose(np.asarray(back_data), data)
    in_nm = tuple(convert(s, u, "nanometer") for s, u in zip(back["scale"], back["units"], strict=True))
    assert in_nm == pytest.approx((10.0, 2.0, 2.0), rel=1e-5)  # MRC keeps Å: 20 Å = 2 nm


def test_a_labels_layer_round_trips(plugins, tmp_path):
    viewer = ViewerModel()
    labels = np.zeros((40, 40), np.int64)
    labels[5:15, 5:15], labels[20:30, 22:35] = 1, 2
    layer = viewer.add_labels(labels, name="cells", scale=(4.0, 4.0), units=("nm", "nm"))
    path = tmp_path / "cells.tif"
    layer.save(str(path), plugin="emzoo")
    image = read_image(path)
    assert image.data.dtype == np.uint16
    np.testing.assert_array_equal(image.data, labels)
    assert image.meta.pixel_size == pytest.approx({"y": 4.0, "x": 4.0})


def test_a_layer_read_by_the_plugin_keeps_its_calibration(plugins, tmp_path, rng):
    src = tmp_path / "a.ome.zarr"
    viewer = ViewerModel()
    viewer.add_image(rng.random((16, 16), dtype=np.float32), scale=(0.5, 0.5), units=("µm", "µm"))
    viewer.layers[0].save(str(src), plugin="emzoo")
    data, attributes, _ = read_layers(str(src))[0]
    write_layer(tmp_path / "b.mrc", data, attributes)
    assert read_image(tmp_path / "b.mrc").meta.pixel_size["x"] == pytest.approx(5000.0)  # Å


def test_an_unknown_ending_is_one_line(tmp_path):
    with pytest.raises(UsageError, match=r"writes \.ome\.zarr") as info:
        write_layer(tmp_path / "x.bmp", np.zeros((4, 4), np.uint8), {"name": "x"})
    assert "\n" not in str(info.value)
