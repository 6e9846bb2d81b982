"""A 2D model on a 3D volume, slice by slice; and the errors when axes do not fit the model."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from emzoo.drivers.slices import SliceView, check_slices, predict_slices
from emzoo.errors import InputError, UsageError
from emzoo.io import Image, ImageMeta, read_slice_folder


@pytest.fixture
def volume(rng) -> np.ndarray:
    return rng.integers(0, 255, (3, 120, 100)).astype(np.uint8)


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_slice_view_reads_like_numpy(volume, dim):
    store = zarr.create_array(store={}, shape=volume.shape, dtype=volume.dtype, chunks=(1, 64, 64))
    store[...] = volume
    view = SliceView(store, dim, 1)
    expected = np.take(volume, 1, axis=dim)
    assert view.shape == expected.shape and view.dtype == volume.dtype
    np.testing.assert_array_equal(np.asarray(view), expected)
    np.testing.assert_array_equal(view[5:17, 3:9], expected[5:17, 3:9])
    np.testing.assert_array_equal(view[2], expected[2])
    assert view.chunks == tuple(c for d, c in enumerate((1, 64, 64)) if d != dim)
    with pytest.raises(IndexError):
        SliceView(volume, dim, volume.shape[dim])


def test_predict_slices_equals_predicting_each_slice(predictor2d, volume):
    meta = ImageMeta("zyx", {"z": 50.0, "y": 4.0, "x": 4.0}, "nanometer")
    done = []
    out = predict_slices(predictor2d, {"raw": Image(volume, meta)}, progress=lambda i, n: done.append((i, n)))
    prob = out["prob"]
    assert prob.meta.axes == "zyx" and prob.data.shape == volume.shape
    assert prob.meta.pixel_size == {"z": 50.0, "y": 4.0, "x": 4.0} and prob.meta.unit == "nanometer"
    assert done == [(1, 3), (2, 3), (3, 3)]
    for z in range(3):
        single = predictor2d.predict(Image(volume[z], ImageMeta("yx")))["prob"].data
        np.testing.assert_array_equal(prob.data[z], single)  # each slice is its own sample


def test_a_folder_of_slices_runs_as_a_volume(predictor2d, volume, tmp_path):
    for z in range(3):
        tifffile.imwrite(tmp_path / f"slice_{z + 1}.tif", volume[z])
    stack = read_slice_folder(tmp_path)
    out = predict_slices(predictor2d, {"raw": stack})["prob"]
    expected = predict_slices(predictor2d, {"raw": Image(volume, ImageMeta("zyx"))})["prob"]
    np.testing.assert_array_equal(out.data, expected.data)


def test_slices_needs_a_2d_model(predictor3d):
    with pytest.raises(UsageError, match=r"this model takes 3D volumes \(.*\): leave slices=True out"):
        check_slices(predictor3d)


def test_a_volume_for_a_2d_model_needs_slices(predictor2d, volume):
    with pytest.raises(InputError, match=r"the input has 3 dimensions \(z=3, y=120, x=100\).*slices=True"):
        predictor2d.predict(Image(volume, ImageMeta("zyx")))


def test_a_3d_model_needs_a_volume(predictor3d, volume):
    expected = r"the model expects a 3D volume \(.*\); the input has \(y=120, x=100\)"
    with pytest.raises(InputError, match=expected):
        predictor3d.predict(Image(volume[0], ImageMeta("yx")))
