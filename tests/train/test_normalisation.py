"""Every use case normalises its training data with the processing its package declares (one
declaration, :meth:`TensorInfo.apply_processing`), and that equals the hand-written numpy
normalisation the zoo models were trained with, so those models stay valid."""

from __future__ import annotations

import numpy as np
import pytest

from emzoo.train.discovery import get_usecase
from emzoo.train.params import load_param_file, resolve_params
from tests.train.usecases import sibling

EPS = 1e-6


def _modules(name: str):
    uc = get_usecase(name)
    return uc, sibling(uc, "data")


def _params(uc) -> dict:
    return resolve_params(load_param_file(uc.params_file))


# the numpy functions the use cases normalised with before (float64, then float32)
def old_zero_mean_unit_variance(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image, np.float64)
    return ((x - x.mean()) / (x.std() + EPS)).astype(np.float32)


def old_scale_range(image: np.ndarray, low: float, high: float) -> np.ndarray:
    x = np.asarray(image, np.float64)
    lo, hi = np.quantile(x, [low / 100, high / 100], method="linear")
    return ((x - lo) / (hi - lo + EPS)).astype(np.float32)


def _images() -> dict[str, np.ndarray]:
    """EM-like images of the dtypes the use cases read: uint8 slices, uint16 tiles, float32 counts."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:300, :280]
    structure = 60 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    return {
        "uint8": np.clip(150 + structure + rng.normal(0, 25, yy.shape), 0, 255).astype(np.uint8),
        "uint16": np.clip(20000 + 80 * structure + rng.normal(0, 900, yy.shape), 0, 65535).astype(np.uint16),
        "float32 counts": (1000 + structure / 6 + rng.normal(0, 12, yy.shape)).astype(np.float32),
    }


IMAGES = _images()


@pytest.mark.parametrize("name", ["membrane_segmentation", "denoising"])
@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_zero_mean_unit_variance_matches_the_old_numpy_normalisation(name, kind):
    uc, data = _modules(name)
    image = IMAGES[kind]
    info = uc.packaging(_params(uc))
    assert info.inputs[0] == data.RAW  # declared once: the package's input is what training uses
    for raw in (image, image[None]):  # yx and cyx
        new = data.normalise(raw)
        assert new.dtype == np.float32 and new.shape == raw.shape
        np.testing.assert_allclose(new, old_zero_mean_unit_variance(raw), rtol=0, atol=2e-5)


@pytest.mark.parametrize("kind", sorted(IMAGES))
@pytest.mark.parametrize("percentiles", [(1.0, 99.8), (0.0, 100.0), (5.0, 95.0)])
def test_scale_range_matches_the_old_numpy_normalisation(kind, percentiles):
    uc, data = _modules("particle_counting")
    low, high = percentiles
    params = {**_params(uc), "percentile_low": low, "percentile_high": high}
    image = IMAGES[kind]
    assert uc.packaging(params).inputs[0] == data.raw_tensor(low, high)
    new = data.normalise(image, low, high)
    assert new.dtype == np.float32 and new.shape == image.shape
    np.testing.assert_allclose(new, old_scale_range(image, low, high), rtol=0, atol=2e-5)


@pytest.mark.parametrize("name", ["membrane_segmentation", "particle_counting", "denoising"])
def test_training_normalises_the_tiny_data_as_the_package_does(name, tmp_path):
    """The datasets are built from ``data.normalise``, which is the package's own preprocessing: the
    normalised training image equals the packaged input processing of the raw image."""
    uc, data = _modules(name)
    params = resolve_params(load_param_file(uc.params_file), dict(uc.tiny_params))
    tensor = uc.packaging(params).inputs[0]
    raw = uc.sample_input(uc.make_tiny_data(tmp_path / "data"))
    expected = tensor.apply_processing(raw)
    if name == "particle_counting":
        got = data.normalise(raw, params["percentile_low"], params["percentile_high"])
    elif name == "denoising":  # the package takes grey levels; its network normalises inside
        np.testing.assert_array_equal(expected, np.asarray(raw, np.float32))
        x = np.asarray(raw, np.float64)
        expected = ((x - x.mean()) / (x.std() + 1e-6)).astype(np.float32)
        np.testing.assert_allclose(data.normalise(raw), expected, rtol=0, atol=1e-5)
        return
    else:
        got = data.normalise(raw)
    np.testing.assert_array_equal(got, expected)
