"""Resampling to the model's pixel size and back (emzoo.runtime.rescale): each output kind, the
pixel size given by hand, and when an input is (not) resampled, on the zoo packages' real specs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from emzoo.errors import InputError, UsageError
from emzoo.io.meta import Image, ImageMeta
from emzoo.package.load import open_model
from emzoo.runtime.rescale import (
    TOLERANCE,
    PixelSize,
    check_rescale,
    model_notes,
    output_modes,
    parse_pixel_size,
    resample,
    sample_grid,
    training_pixel_size,
)

ZOO = Path(__file__).resolve().parents[2] / "zoo_models"


@pytest.fixture(scope="module")
def membrane():
    return open_model(ZOO / "em-membrane-unet2d").spec


@pytest.fixture(scope="module")
def counter():
    return open_model(ZOO / "em-particle-counter").spec


def _density_counter(counter):
    """The zoo counter's spec as a package that counts by the integral of its map (a density map)."""
    return replace(
        counter, emzoo={**counter.emzoo, "counting": {**counter.emzoo["counting"], "count": "integral"}}
    )


def _image(shape=(64, 48), size: float | None = 8.0, unit: str | None = "nanometer", seed=0) -> Image:
    data = np.random.default_rng(seed).integers(0, 255, shape).astype(np.uint8)
    pixel_size = {} if size is None else {"y": size, "x": size}
    return Image(data, ImageMeta(axes="yx", pixel_size=pixel_size, unit=unit, format="tiff"))


# -- each output kind ---------------------------------------------------------------------------


def test_probabilities_stay_probabilities_and_are_anti_aliased():
    board = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)  # a 1-px checkerboard
    down = resample(board, (32, 32), "image")
    assert down.shape == (32, 32) and down.dtype == np.float32
    # without the Gaussian the 2x subsampling would alias it to all 0 or all 1
    assert np.allclose(down, 0.5, atol=0.1)
    up = resample(np.random.default_rng(0).random((16, 16), np.float32), (40, 40), "image")
    assert up.shape == (40, 40) and up.min() >= 0 and up.max() <= 1  # linear: no overshoot
    ramp = np.tile(np.arange(8, dtype=np.float32), (8, 1))
    # pixel edges aligned: the mean of a linear ramp is kept when it doubles
    assert resample(ramp, (16, 16), "image").mean() == pytest.approx(ramp.mean(), abs=0.05)


def test_labels_keep_their_values_and_dtype():
    labels = np.repeat(np.repeat(np.arange(12, dtype=np.uint16).reshape(3, 4), 4, 0), 4, 1)
    for shape in ((6, 8), (24, 32), (5, 7)):
        out = resample(labels, shape, "labels")
        assert out.shape == shape and out.dtype == np.uint16
        assert set(np.unique(out)) <= set(range(12))
    assert np.array_equal(resample(resample(labels, (24, 32), "labels"), (12, 16), "labels"), labels)
    mask = labels > 5
    assert resample(mask, (24, 32), "labels").dtype == np.bool_


@pytest.mark.parametrize("shape", [(128, 96), (32, 24), (100, 30)])
def test_density_keeps_its_integral(shape):
    density = np.zeros((64, 48), np.float32)
    density[10:14, 20:24] = 1 / 16  # one particle
    density[40:48, 5:13] = 1 / 64  # another
    out = resample(density, shape, "density")
    assert out.shape == shape
    assert float(out.sum()) == pytest.approx(2.0, rel=1e-5)


def test_diameters_scale_with_the_pixels():
    sizes = np.full((32, 32), 10.0, np.float32)  # 10 px everywhere on the model's grid
    assert np.allclose(resample(sizes, (16, 16), "sizes"), 5.0)
    assert np.allclose(resample(sizes, (64, 64), "sizes"), 20.0)


def test_values_and_same_shapes_are_unchanged():
    scores = np.array([0.2, 0.8], np.float32)
    assert resample(scores, (5,), "value") is scores
    image = np.ones((4, 4), np.float32)
    assert resample(image, (4, 4), "image") is image
    with pytest.raises(ValueError):
        resample(image, (4,), "image")


def test_output_modes_come_from_the_package(membrane, counter):
    assert output_modes(membrane) == {"membrane_probability": "image"}
    assert output_modes(counter) == {"heat": "image", "diameter": "sizes"}  # a heat map keeps values
    assert output_modes(_density_counter(counter)) == {"heat": "density", "diameter": "sizes"}


# -- the pixel size given by hand ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, values, unit",
    [
        ("2.5nm", (2.5,), "nanometer"),
        ("4Å", (4.0,), "angstrom"),
        ("4 A", (4.0,), "angstrom"),
        ("0.004um/px", (0.004,), "micrometer"),
        ("50,4,4 nm", (50.0, 4.0, 4.0), "nanometer"),
        ("2.5", (2.5,), None),
        (2.5, (2.5,), None),
    ],
)
def test_pixel_sizes_are_parsed(text, values, unit):
    assert parse_pixel_size(text) == PixelSize(values, unit)


@pytest.mark.parametrize(
    "text, message",
    [
        ("big", "give a number and a unit"),
        ("4 furlongs", "unknown length unit 'furlongs'"),
        ("0nm", "must be positive"),
        ("1,2,3,4nm", "give a number and a unit"),
    ],
)
def test_bad_pixel_sizes_name_the_parameter(text, message):
    with pytest.raises(UsageError, match=message) as e:
        parse_pixel_size(text)
    assert e.value.parameters() == ["pixel_size"]


def test_rescale_is_auto_or_off():
    assert check_rescale("AUTO") == "auto"
    with pytest.raises(UsageError, match="rescale 'on': give auto or off"):
        check_rescale("on")


def test_a_bare_number_takes_the_model_unit(membrane, counter):
    grid = sample_grid(membrane, {"raw": _image(size=None, unit=None)}, "off", "8")
    assert grid.images["raw"].meta.pixel_size == {"y": 8.0, "x": 8.0}
    assert grid.images["raw"].meta.unit == "nanometer"
    with pytest.raises(UsageError, match=r"records none: write the unit, e\.g\. 8nm$"):
        model_notes(counter, "off", parse_pixel_size("8"))


def test_the_flag_wins_over_the_file_with_a_note(membrane):
    grid = sample_grid(membrane, {"raw": _image(size=0.4, unit="micrometer")}, "off", "8nm")
    assert grid.images["raw"].meta.pixel_size == {"y": 8.0, "x": 8.0}
    assert grid.notes == ["{pixel_size} 8 nm/px used instead of the file's 0.4 µm/px"]
    assert grid.rescale is None and grid.model_images["raw"] is grid.images["raw"]


# -- when an input is resampled ------------------------------------------------------------------


def test_the_training_pixel_size_is_read_from_the_package(membrane, counter):
    assert training_pixel_size(membrane) == ({"y": 4.0, "x": 4.0}, "nanometer")
    assert training_pixel_size(counter) is None
    assert model_notes(counter, "auto", None) == [
        "{rescale=auto}: the model records no training pixel size: inputs are not resampled"
    ]
    assert model_notes(membrane, "auto", None) == []


def test_an_8nm_input_is_resampled_to_4nm_and_back(membrane):
    image = _image((64, 48), 8.0)
    grid = sample_grid(membrane, {"raw": image}, "auto")
    model = grid.model_images["raw"]
    assert model.shape == (128, 96) and model.meta.pixel_size == {"y": 4.0, "x": 4.0}
    assert grid.notes == ["resampled 8 nm/px -> 4 nm/px"]
    record = grid.rescale.as_dict()
    assert record["factor"] == {"y": 2.0, "x": 2.0}
    assert record["from"] == {"y": 8.0, "x": 8.0} and record["to"] == {"y": 4.0, "x": 4.0}
    # an output on the model's grid goes back to the input's, with the input's calibration
    prob = Image(np.full((128, 96), 0.25, np.float32), replace(model.meta, format="", header={}))
    back = grid.restore({"membrane_probability": prob})["membrane_probability"]
    assert back.shape == (64, 48) and back.meta.pixel_size == {"y": 8.0, "x": 8.0}
    assert np.allclose(back.data, 0.25)


def test_other_units_and_finer_inputs(membrane):
    grid = sample_grid(membrane, {"raw": _image((100, 80), 20.0, "angstrom")}, "auto")  # 2 nm
    assert grid.model_images["raw"].shape == (50, 40)
    assert grid.model_images["raw"].meta.pixel_size == {"y": 40.0, "x": 40.0}  # Å, as the file
    assert grid.notes == ["resampled 2 nm/px -> 4 nm/px"]


def test_within_the_tolerance_nothing_is_resampled(membrane):
    near = 4.0 * (1 + TOLERANCE * 0.9)
    grid = sample_grid(membrane, {"raw": _image(size=near)}, "auto")
    assert grid.rescale is None and grid.notes == []
    assert grid.model_images["raw"] is grid.images["raw"]


def test_unknown_pixel_sizes_and_off_are_not_resampled(membrane, counter):
    assert sample_grid(membrane, {"raw": _image(size=None)}, "auto").notes == [
        "pixel size unknown: not resampled (give {pixel_size})"
    ]
    assert sample_grid(membrane, {"raw": _image()}, "off").rescale is None
    assert sample_grid(counter, {"raw": _image()}, "auto").rescale is None  # no training pixel size


def test_streamed_inputs_and_far_pixel_sizes_are_refused(membrane):
    with pytest.raises(UsageError, match="resamples in memory only") as e:
        sample_grid(membrane, {"raw": _image()}, "auto", streamed=True)
    assert set(e.value.parameters()) == {"rescale", "stream"}
    sample_grid(membrane, {"raw": _image(size=4.0)}, "auto", streamed=True)  # nothing to resample
    with pytest.raises(InputError, match="too coarse to resample"):
        sample_grid(membrane, {"raw": _image(size=40.0)}, "auto")


def test_a_density_map_goes_back_with_its_count(counter):
    density_counter = _density_counter(counter)
    training = {"pixel_size": {"y": 1.0, "x": 1.0}, "unit": "nm"}
    spec = replace(density_counter, emzoo={**density_counter.emzoo, "training_data": training})
    grid = sample_grid(spec, {"raw": _image((60, 60), 0.5)}, "auto")  # 0.5 nm: halved
    model = grid.model_images["raw"]
    assert model.shape == (30, 30)
    density = np.zeros((30, 30), np.float32)
    density[5:7, 5:7] = density[20:22, 10:12] = 0.25
    back = grid.restore({"heat": Image(density, model.meta)})["heat"]
    assert back.shape == (60, 60) and float(back.data.sum()) == pytest.approx(2.0, rel=1e-5)


def test_the_python_api_takes_the_same_keywords(tmp_path):
    import emzoo

    image = np.random.default_rng(0).integers(0, 255, (64, 48)).astype(np.uint8)
    auto = emzoo.predict(ZOO / "em-membrane-unet2d", image, pixel_size="8nm", rescale="auto")
    off = emzoo.predict(ZOO / "em-membrane-unet2d", image, pixel_size="8nm")
    assert auto["membrane_probability"].shape == off["membrane_probability"].shape == (64, 48)
    assert not np.allclose(auto["membrane_probability"], off["membrane_probability"], atol=0.05)
    with pytest.raises(UsageError, match="rescale 'on'"):  # checked before the model is opened
        emzoo.predict(tmp_path / "no-such-model", image, rescale="on")
