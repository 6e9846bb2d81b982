"""Warn when an input looks unlike the model's training data (pixel size, intensity distribution).

Packages built by emzoo carry the training data's pixel size and raw intensity statistics in
``config.emzoo.training_data`` (``{"pixel_size": {"y": 4.0, "x": 4.0}, "unit": "nanometer",
"intensity": {"mean", "std", "p1", "p99", "dtype", ...}}``). Models from elsewhere carry none, and
then nothing is checked. These are warnings, not errors: the user decides.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emzoo.io.meta import Image
from emzoo.io.units import convert, short_unit

PIXEL_SIZE_FACTOR = 1.5  # warn when the pixel size differs by more than this factor either way
SPREAD_TOLERANCE = 1.0  # warn when normalised 1st/99th percentiles differ by more (in std units)
MAX_SAMPLES = 2048  # the check looks at a central crop of at most this many pixels per axis


def _pixel_size_warnings(image: Image, training: dict[str, Any]) -> list[str]:
    train_px, train_unit = training.get("pixel_size") or {}, training.get("unit")
    meta = image.meta
    if not train_px or not train_unit or not meta.pixel_size or not meta.unit:
        return []
    off = []
    for axis, size in meta.pixel_size.items():
        if axis not in train_px or not size:
            continue
        try:
            mine = convert(size, meta.unit, train_unit)
        except ValueError:
            continue
        factor = mine / train_px[axis]
        if factor > PIXEL_SIZE_FACTOR or factor < 1 / PIXEL_SIZE_FACTOR:
            off.append((axis, mine, train_px[axis], factor))
    if not off:
        return []
    axes = "/".join(a for a, *_ in off)
    _, mine, train, factor = off[0]
    unit = short_unit(train_unit)
    return [
        f"its pixel size along {axes} is {mine:.4g} {unit}, the training data's {train:.4g} {unit} "
        f"({factor:.3g}x): structures appear at another scale than the model learned; "
        f"resample the image to about {train:.4g} {unit}/px for reliable results"
    ]


def _central_crop(data, axes: str) -> np.ndarray:
    index = []
    for letter, n in zip(axes, data.shape, strict=True):
        if letter in "yx" and n > MAX_SAMPLES:
            start = (n - MAX_SAMPLES) // 2
            index.append(slice(start, start + MAX_SAMPLES))
        elif letter in "zt" and n > 1:
            index.append(slice(n // 2, n // 2 + 1))
        else:
            index.append(slice(None))
    return np.asarray(data[tuple(index)], dtype=np.float64)


def _intensity_warnings(image: Image, training: dict[str, Any]) -> list[str]:
    stats = training.get("intensity") or {}
    if not all(k in stats for k in ("mean", "std", "p1", "p99")) or not stats["std"]:
        return []
    sample = _central_crop(image.data, image.meta.axes)
    if sample.size == 0:
        return []
    mean, std = float(sample.mean()), float(sample.std())
    if std == 0:
        return ["it is constant (one grey value everywhere): there is nothing to predict from"]
    p1, p99 = np.percentile(sample, [1, 99])
    mine = ((p1 - mean) / std, (p99 - mean) / std)
    train = ((stats["p1"] - stats["mean"]) / stats["std"], (stats["p99"] - stats["mean"]) / stats["std"])
    if max(abs(a - b) for a, b in zip(mine, train, strict=True)) > SPREAD_TOLERANCE:
        return [
            "its intensity distribution is unlike the training data's (1st-99th percentile at "
            f"{mine[0]:+.1f}..{mine[1]:+.1f} std around the mean, "
            f"training {train[0]:+.1f}..{train[1]:+.1f}): "
            "check contrast inversion, saturation or a different detector"
        ]
    return []


def check_input(emzoo_config: dict[str, Any], image: Image) -> list[str]:
    """Plain-language warnings for ``image`` against a package's ``config.emzoo``; [] if it looks fine."""
    training = emzoo_config.get("training_data") or {}
    if not training:
        return []
    return _pixel_size_warnings(image, training) + _intensity_warnings(image, training)
