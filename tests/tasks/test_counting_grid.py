"""Counts found on the model's grid (``rescale="auto"``) given in the input image's pixels: centres
and diameters scaled back, the count kept (emzoo.tasks.counting.in_image_pixels, the counting kind)."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from emzoo.drivers.kinds import Sample
from emzoo.drivers.options import OutputOptions
from emzoo.io.meta import Image, ImageMeta
from emzoo.package.load import open_model
from emzoo.tasks.counting import CountResult, in_image_pixels
from emzoo.tasks.counting_files import CountingKind

ZOO = Path(__file__).resolve().parents[2] / "zoo_models"


def _on(shape: tuple[int, ...], axes: str = "yx") -> Image:
    return Image(np.zeros(shape, np.float32), ImageMeta(axes=axes))


def test_centres_and_diameters_are_scaled_to_the_image():
    result = CountResult(2.0, np.array([[10.0, 4.0, 0.9], [0.0, 0.0, 0.5]]), diameters=np.array([6.0, 3.0]))
    # the map was predicted on a grid twice as fine as the image (8 nm image, 4 nm model)
    scaled = in_image_pixels(result, _on((32, 32)), _on((64, 64)))
    assert scaled.centres[:, :2].tolist() == [[4.75, 1.75], [-0.25, -0.25]]  # (c + 0.5) / 2 - 0.5
    assert scaled.centres[:, 2].tolist() == [0.9, 0.5] and scaled.count == 2.0
    assert scaled.diameters.tolist() == [3.0, 1.5]
    assert in_image_pixels(result, _on((64, 64)), _on((64, 64))) is result  # the same grid


def test_the_counting_kind_writes_centres_in_the_input_pixels(tmp_path):
    kind = CountingKind(open_model(ZOO / "em-particle-counter").spec)  # peaks of `heat`, sizes `diameter`
    yy, xx = np.indices((64, 64))
    heat = np.zeros((64, 64), np.float32)
    for y, x in ((20, 40), (50, 10)):  # two particles on the model's (2x finer) grid
        heat = np.maximum(heat, np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8.0).astype(np.float32))
    diameter = np.full((64, 64), 8.0, np.float32)
    model_meta = ImageMeta(axes="yx", pixel_size={"y": 0.5, "x": 0.5}, unit="nanometer")
    image = Image(np.zeros((32, 32), np.uint8), replace(model_meta, pixel_size={"y": 1.0, "x": 1.0}))
    base = tmp_path / "img"
    todo = kind.extra_paths(base)
    outputs = {"heat": Image(heat, model_meta), "diameter": Image(diameter, model_meta)}
    done = kind.finish_sample(Sample(image, Path("img.tif"), outputs, todo, base), OutputOptions())
    assert done.row["count"] == pytest.approx(2.0)
    with open(todo["centres"], newline="") as f:
        rows = sorted((int(r["y"]), int(r["x"]), float(r["diameter_px"])) for r in csv.DictReader(f))
    assert rows == [(10, 20, 4.0), (25, 5, 4.0)]  # round((c + 0.5) / 2 - 0.5); 8 model px = 4 image px
