"""Warnings for inputs unlike the training data."""

from __future__ import annotations

import numpy as np

from emzoo.io.meta import Image, ImageMeta
from emzoo.tasks.ood import check_input

TRAINING = {
    "training_data": {
        "pixel_size": {"y": 4.0, "x": 4.0},
        "unit": "nanometer",
        "intensity": {"mean": 123.6, "std": 42.3, "p1": 31.0, "p99": 206.0, "dtype": "uint8"},
    }
}


def em_like(rng, shape=(256, 256)):
    return np.clip(rng.normal(123.6, 42.3, shape), 0, 255).astype(np.uint8)


def test_similar_input_gives_no_warning(rng):
    image = Image(em_like(rng), ImageMeta(axes="yx", pixel_size={"y": 4.2, "x": 4.2}, unit="nanometer"))
    assert check_input(TRAINING, image) == []


def test_pixel_size_far_from_training(rng):
    image = Image(em_like(rng), ImageMeta(axes="yx", pixel_size={"y": 6.67, "x": 6.67}, unit="angstrom"))
    (warning,) = check_input(TRAINING, image)
    assert "pixel size along" in warning and "0.667 nm" in warning and "resample" in warning


def test_unknown_pixel_size_is_not_a_warning(rng):
    assert check_input(TRAINING, Image(em_like(rng), ImageMeta(axes="yx"))) == []


def test_saturated_or_odd_intensities(rng):
    data = em_like(rng)
    data[:200] = 255  # mostly saturated
    (warning,) = check_input(TRAINING, Image(data, ImageMeta(axes="yx")))
    assert "intensity distribution is unlike the training data" in warning


def test_constant_image(rng):
    (warning,) = check_input(TRAINING, Image(np.full((64, 64), 7, np.uint8), ImageMeta(axes="yx")))
    assert "constant" in warning


def test_packages_without_training_statistics_are_not_checked(rng):
    assert check_input({}, Image(np.zeros((8, 8)), ImageMeta(axes="yx"))) == []
