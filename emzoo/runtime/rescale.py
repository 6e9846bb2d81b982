"""Resampling to the model's pixel size and back (``rescale="auto"``), and the inputs' pixel size
given by hand (``pixel_size``).

A package built by emzoo records the pixel size of its training data (``config.emzoo.training_data``:
``pixel_size`` per axis and ``unit``). With ``rescale="auto"`` an input whose pixel size (from its
file, or ``pixel_size``) differs from it by more than :data:`TOLERANCE` along any of those axes is
resampled to it (cubic spline, Gaussian anti-aliasing when it shrinks), predicted as usual, and every
output is resampled back to the input's grid as its kind asks (:data:`Mode`). Pixel edges are aligned
(the resampled image covers the same extent), so a pixel ``x`` of the model's grid lies at
``(x + 0.5) * n / m - 0.5`` of the input's (``n``, ``m``: the two lengths). scipy does the
interpolation.

>>> parse_pixel_size("4Å")
PixelSize(values=(4.0,), unit='angstrom')
>>> float(resample(np.ones((4, 4), np.float32), (8, 8), "density").sum())
16.0
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from emzoo.errors import InputError, UsageError, literal
from emzoo.io.meta import Image, ImageMeta
from emzoo.io.units import convert, normalize_unit, short_unit
from emzoo.package.spec import ModelSpec

RescaleMode = Literal["auto", "off"]
RESCALE_MODES: tuple[str, ...] = ("auto", "off")
# how an output goes back to the input's grid: "image" linear (probabilities, float images),
# "labels" nearest, "density" linear with its integral kept (a count stays the count), "sizes"
# linear with its values (lengths in px) scaled as the pixels, "value" unchanged (no spatial axes)
Mode = Literal["image", "labels", "density", "sizes", "value"]
TOLERANCE = 0.10  # resampled when the pixel size differs from the model's by more than this (relative)
MAX_UPSAMPLING = 8.0  # an input is never enlarged more than this along an axis
INPUT_ORDER = 3  # cubic: on the ISBI test slices at 8 nm/px it keeps the membrane F1 that linear loses
OUTPUT_ORDER = 1  # linear: probabilities stay within 0..1
SPATIAL = "zyx"

__all__ = [
    "PixelSize",
    "Rescale",
    "SampleGrid",
    "check_rescale",
    "model_notes",
    "output_modes",
    "parse_pixel_size",
    "resample",
    "sample_grid",
    "training_pixel_size",
]

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_PIXEL_SIZE = re.compile(rf"^\s*({_NUMBER}(?:\s*,\s*{_NUMBER}){{0,2}})\s*([^\d\s,.][^,]*?)?\s*$")


@dataclass(frozen=True)
class PixelSize:
    """A pixel size given by hand: one value (``y`` and ``x``), or ``y, x``, or ``z, y, x``;
    ``unit`` None: the model's unit."""

    values: tuple[float, ...]
    unit: str | None = None

    def per_axis(self, axes: str) -> dict[str, float]:
        """The size of each of ``axes``' spatial axes that the values name."""
        named = ("y", "x") if len(self.values) == 1 else SPATIAL[-len(self.values) :]
        values = self.values * 2 if len(self.values) == 1 else self.values
        return {a: v for a, v in zip(named, values, strict=True) if a in axes}

    def __str__(self) -> str:
        return ",".join(f"{v:g}" for v in self.values) + (short_unit(self.unit) if self.unit else "")


def parse_pixel_size(value: PixelSize | str | float | None) -> PixelSize | None:
    """``"2.5nm"``, ``"4 Å"``, ``"0.004um/px"``, ``"50,4,4nm"`` (z, y, x) or a bare number (in the
    model's unit) as a :class:`PixelSize`; a bad value raises :class:`UsageError` naming ``pixel_size``."""
    if value is None or isinstance(value, PixelSize):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        values, unit = (float(value),), None
    else:
        text = str(value).strip()
        text = re.sub(r"\s*/\s*(px|pixels?)$", "", text, flags=re.IGNORECASE)
        found = _PIXEL_SIZE.match(text)
        if found is None:
            raise UsageError(
                f"{{pixel_size}} {literal(repr(value))}: give a number and a unit, e.g. 2.5nm, 4Å or "
                "0.004um (a bare number is in the model's unit; y,x or z,y,x for each axis)"
            )
        values = tuple(float(v) for v in found.group(1).split(","))
        unit = found.group(2)
        if unit is not None and normalize_unit(unit) is None:
            raise UsageError(
                f"{{pixel_size}} {literal(repr(value))}: unknown length unit {literal(repr(unit))} "
                "(known: pm, Å, nm, µm, mm)"
            )
        unit = normalize_unit(unit)
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise UsageError(f"{{pixel_size}} {literal(repr(value))}: a pixel size must be positive")
    return PixelSize(values, unit)


def check_rescale(value: str) -> str:
    """``"auto"`` or ``"off"`` (any case); anything else raises :class:`UsageError` naming ``rescale``."""
    mode = str(value).lower()
    if mode not in RESCALE_MODES:
        raise UsageError(f"{{rescale}} {literal(repr(value))}: give auto or off")
    return mode


def training_pixel_size(spec: ModelSpec) -> tuple[dict[str, float], str] | None:
    """The training data's pixel size per axis and its unit (``config.emzoo.training_data``), or
    None when the package records none."""
    training = (spec.emzoo or {}).get("training_data") or {}
    sizes, unit = training.get("pixel_size") or {}, normalize_unit(training.get("unit"))
    sizes = {str(a): float(s) for a, s in sizes.items() if a in SPATIAL and s and float(s) > 0}
    return (sizes, unit) if sizes and unit else None


def model_notes(spec: ModelSpec, rescale: str, pixel_size: PixelSize | None) -> list[str]:
    """The run's one-line notes on rescaling (a model without a training pixel size); a bare
    ``pixel_size`` for a model without a unit raises :class:`UsageError`."""
    trained = training_pixel_size(spec)
    if pixel_size is not None:
        _unit(pixel_size, trained)
    if check_rescale(rescale) == "auto" and trained is None:
        return ["{rescale=auto}: the model records no training pixel size: inputs are not resampled"]
    return []


def output_modes(spec: ModelSpec) -> dict[str, Mode]:
    """How each output goes back to the input's grid: ``value`` without spatial axes, ``labels`` for
    integer outputs, ``density`` for the map of a counting package that counts by its integral
    (``config.emzoo.counting``, :mod:`emzoo.tasks.counting`), ``sizes`` for its map of diameters,
    else ``image``."""
    counting = (spec.emzoo or {}).get("counting") or {}
    modes: dict[str, Mode] = {}
    for t in spec.outputs:
        if not t.spatial_axes:
            modes[t.id] = "value"
        elif np.dtype(t.dtype).kind in "biu":
            modes[t.id] = "labels"
        elif t.id == counting.get("output") and counting.get("count", "integral") == "integral":
            modes[t.id] = "density"
        elif t.id == counting.get("sizes"):
            modes[t.id] = "sizes"
        else:
            modes[t.id] = "image"
    return modes


def resample(
    data: Any, shape: tuple[int, ...], mode: Mode = "image", *, order: int | None = None
) -> np.ndarray:
    """``data`` resampled to ``shape`` (pixel edges aligned), as ``mode`` says (see :data:`Mode`);
    ``order``: the spline order of ``image``, ``density`` and ``sizes`` (default linear). An axis
    that shrinks is smoothed first (Gaussian, sigma ``(n / m - 1) / 2``, as scikit-image's
    anti-aliasing); labels keep their values and dtype."""
    from scipy import ndimage

    data = np.asarray(data)
    shape = tuple(int(n) for n in shape)
    if len(shape) != data.ndim or min(shape, default=1) < 1:
        raise ValueError(f"cannot resample an array of shape {data.shape} to {shape}")
    if mode == "value" or shape == data.shape:
        return data
    zoom = [n / m for n, m in zip(shape, data.shape, strict=True)]
    if mode == "labels":
        source = data.view(np.uint8) if data.dtype == np.bool_ else data
        out = ndimage.zoom(source, zoom, order=0, grid_mode=True, mode="reflect")
        return out.view(np.bool_) if data.dtype == np.bool_ else out
    x = data if data.dtype.kind == "f" else data.astype(np.float32)
    sigma = [max(0.0, (1 / z - 1) / 2) for z in zoom]
    if any(sigma):
        x = ndimage.gaussian_filter(x, sigma, mode="reflect")
    out = ndimage.zoom(
        x, zoom, order=OUTPUT_ORDER if order is None else order, grid_mode=True, mode="reflect"
    )
    if mode == "density":  # each new pixel holds the density of its area: the integral stays
        total = float(np.sum(data, dtype=np.float64))
        out *= np.prod([1 / z for z in zoom])
        now = float(np.sum(out, dtype=np.float64))
        # what the interpolation loses at the edges; a map summing to about 0 keeps the area factor
        if now and 0.5 < total / now < 2:
            out *= total / now
    elif mode == "sizes":  # lengths in px of the old grid -> px of the new one
        changed = [z for z in zoom if z != 1]
        out *= math.prod(changed) ** (1 / len(changed))
    return out


@dataclass(frozen=True)
class Rescale:
    """What ``rescale="auto"`` did to one input: its pixel size ``source`` along ``axes`` resampled
    to ``target`` (both in ``unit``, the model's), ``shape`` px to ``model_shape`` px."""

    axes: str
    source: tuple[float, ...]
    target: tuple[float, ...]
    unit: str
    shape: tuple[int, ...]
    model_shape: tuple[int, ...]

    @property
    def factor(self) -> tuple[float, ...]:
        """How much larger the predicted image is along each axis (2.0: twice as many px)."""
        return tuple(m / n for m, n in zip(self.model_shape, self.shape, strict=True))

    def describe(self) -> str:
        """``resampled 8 nm/px -> 4 nm/px``"""
        return f"resampled {_shown(self.source, self.unit)} -> {_shown(self.target, self.unit)}"

    def as_dict(self) -> dict[str, Any]:
        """The record for provenance: factor, from, to (per axis), unit, shapes."""
        return {
            "axes": self.axes,
            "factor": dict(zip(self.axes, self.factor, strict=True)),
            "from": dict(zip(self.axes, self.source, strict=True)),
            "to": dict(zip(self.axes, self.target, strict=True)),
            "unit": self.unit,
            "shape": dict(zip(self.axes, self.shape, strict=True)),
            "model_shape": dict(zip(self.axes, self.model_shape, strict=True)),
        }


def _shown(sizes: tuple[float, ...] | dict[str, float], unit: str | None) -> str:
    values = list(sizes.values()) if isinstance(sizes, dict) else list(sizes)
    text = (
        f"{values[0]:.4g}" if len({f"{v:.4g}" for v in values}) == 1 else "x".join(f"{v:.4g}" for v in values)
    )
    return f"{text} {short_unit(unit)}/px"


@dataclass(frozen=True)
class SampleGrid:
    """One sample on the input's grid (``images``, calibrated by ``pixel_size`` where given) and on
    the model's (``model_images``: the same images unless ``rescale`` says what was resampled);
    ``notes``: one-line notes for the run's summary; :meth:`restore` brings outputs back."""

    images: dict[str, Image]
    model_images: dict[str, Image]
    rescale: Rescale | None = None
    notes: list[str] = field(default_factory=list)
    modes: dict[str, Mode] = field(default_factory=dict)

    def restore(self, outputs: Mapping[str, Image]) -> dict[str, Image]:
        """Outputs predicted on the model's grid, resampled back to the input's, with its calibration."""
        if self.rescale is None:
            return dict(outputs)
        first = next(iter(self.images))
        ref, model_ref = self.images[first].meta, self.model_images[first].meta
        restored = {}
        for tid, image in outputs.items():
            axes = image.meta.axes
            mode = self.modes.get(tid) or ("labels" if np.dtype(image.data.dtype).kind in "biu" else "image")
            letters = [a for a in self.rescale.axes if a in axes]
            if mode == "value" or not letters:
                restored[tid] = image
                continue
            shape = list(image.shape)
            pixel_size = dict(image.meta.pixel_size)
            for a in letters:
                d, i = axes.index(a), self.rescale.axes.index(a)
                shape[d] = max(1, round(image.shape[d] * self.rescale.shape[i] / self.rescale.model_shape[i]))
                if a in pixel_size and a in ref.pixel_size and model_ref.pixel_size.get(a):
                    pixel_size[a] = ref.pixel_size[a] * pixel_size[a] / model_ref.pixel_size[a]
            data = resample(image.data, tuple(shape), mode)
            restored[tid] = Image(data, replace(image.meta, pixel_size=pixel_size))
        return restored


def sample_grid(
    spec: ModelSpec,
    images: Mapping[str, Image],
    rescale: str = "off",
    pixel_size: PixelSize | str | float | None = None,
    *,
    streamed: bool = False,
) -> SampleGrid:
    """The images of one sample (the first one decides) calibrated by ``pixel_size`` and, with
    ``rescale="auto"``, resampled to the model's pixel size. ``streamed``: the sample is predicted
    out of core, where resampling is refused (:class:`UsageError`)."""
    mode, given = check_rescale(rescale), parse_pixel_size(pixel_size)
    trained = training_pixel_size(spec)
    images, notes = dict(images), []
    if given is not None:
        unit = _unit(given, trained)
        own = next(iter(images.values())).meta
        images = {k: Image(im.data, _calibrated(im.meta, given, unit)) for k, im in images.items()}
        replaced = {a: s for a, s in own.pixel_size.items() if a in given.per_axis(own.axes)}
        if replaced and normalize_unit(own.unit):
            shown = _shown(given.per_axis(own.axes), unit)
            notes.append(f"{{pixel_size}} {shown} used instead of the file's {_shown(replaced, own.unit)}")
    modes = output_modes(spec)
    if mode == "off" or trained is None:
        return SampleGrid(images, images, None, notes, modes)
    first = next(iter(images.values()))
    plan = _plan(first, *trained)
    if isinstance(plan, str):
        return SampleGrid(images, images, None, [*notes, plan], modes)
    if plan is None:
        return SampleGrid(images, images, None, notes, modes)
    if streamed:
        raise UsageError(
            f"{{rescale=auto}} resamples in memory only and this input is predicted out of core: add "
            f"{{stream=False}}, or resample it to {_shown(trained[0], trained[1])} first"
        )
    model_images = {k: _resampled(im, plan) for k, im in images.items()}
    return SampleGrid(images, model_images, plan, [*notes, plan.describe()], modes)


def _unit(given: PixelSize, trained: tuple[dict[str, float], str] | None) -> str:
    """The unit of a pixel size given by hand: its own, else the model's."""
    if given.unit is None and trained is None:
        raise UsageError(
            f"{{pixel_size}} {given}: a bare number is in the model's unit and this model records "
            f"none: write the unit, e.g. {given}nm"
        )
    return given.unit or trained[1]


def _calibrated(meta: ImageMeta, given: PixelSize, unit: str) -> ImageMeta:
    """``meta`` with the pixel size given by hand (the file's other axes kept, in the same unit)."""
    sizes = given.per_axis(meta.axes)
    own_unit = normalize_unit(meta.unit)
    if own_unit is not None:
        sizes = {**{a: convert(s, own_unit, unit) for a, s in meta.pixel_size.items() if s}, **sizes}
    return replace(meta, pixel_size=sizes, unit=unit)


def _plan(image: Image, trained: dict[str, float], unit: str) -> Rescale | str | None:
    """The resampling of ``image`` to the training pixel size; None: within :data:`TOLERANCE`; a
    note when its pixel size is unknown."""
    meta = image.meta
    own_unit = normalize_unit(meta.unit)
    axes = "".join(a for a in SPATIAL if a in meta.axes and a in trained and meta.pixel_size.get(a))
    if own_unit is None or not axes:
        return "pixel size unknown: not resampled (give {pixel_size})"
    source = tuple(convert(meta.pixel_size[a], own_unit, unit) for a in axes)
    if all(abs(s / trained[a] - 1) <= TOLERANCE for s, a in zip(source, axes, strict=True)):
        return None
    shape = tuple(image.shape[meta.axes.index(a)] for a in axes)
    model_shape = tuple(
        max(1, round(n * s / trained[a])) for n, s, a in zip(shape, source, axes, strict=True)
    )
    if any(m / n > MAX_UPSAMPLING for m, n in zip(model_shape, shape, strict=True)):
        raise InputError(
            f"its pixel size {_shown(source, unit)} is more than {MAX_UPSAMPLING:g}x the model's "
            f"{_shown(tuple(trained[a] for a in axes), unit)}: too coarse to resample (check its "
            "calibration or {pixel_size})"
        )
    target = tuple(s * n / m for s, n, m in zip(source, shape, model_shape, strict=True))
    return Rescale(axes, source, target, unit, shape, model_shape)


def _resampled(image: Image, plan: Rescale) -> Image:
    """An input on the model's grid (cubic), its calibration the grid's."""
    meta = image.meta
    shape = list(image.shape)
    pixel_size = dict(meta.pixel_size)
    for a, n, m in zip(plan.axes, plan.shape, plan.model_shape, strict=True):
        if a in meta.axes:
            d = meta.axes.index(a)
            m = max(1, round(shape[d] * m / n))  # the same factor for every input of the sample
            if a in pixel_size:
                pixel_size[a] = pixel_size[a] * shape[d] / m
            shape[d] = m
    data = resample(image.data, tuple(shape), "image", order=INPUT_ORDER)
    return Image(data, replace(meta, pixel_size=pixel_size))
