"""Shared by the rosettasciio-based readers (DM, EMD, SER): rsciio signal dictionaries -> :class:`Image`.

rosettasciio returns a list of signals, each a dict with ``data`` (numpy or, with ``lazy=True``, dask),
``axes`` (one dict per array dimension: ``name``, ``scale``, ``offset``, ``units``, ``navigate``) and
``metadata``. An image is a signal with two signal axes (``navigate`` false), optionally with one
navigation axis in front (a series, read as ``zyx``). Spectra and spectrum images are not images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emzoo.errors import InputError
from emzoo.io.meta import Image, ImageMeta
from emzoo.io.units import convert, normalize_unit


def _title(signal: dict) -> str:
    return str(signal.get("metadata", {}).get("General", {}).get("title", "") or "")


def _axes_in_order(signal: dict) -> list[dict]:
    axes = [dict(a) for a in signal.get("axes", [])]
    if axes and all("index_in_array" in a for a in axes):
        axes.sort(key=lambda a: int(a["index_in_array"]))
    return axes


def _squeezed(signal: dict) -> tuple[Any, list[dict]]:
    """Data and axes without length-1 dimensions (a lazy view for dask data)."""
    data, axes = signal["data"], _axes_in_order(signal)
    if len(axes) != data.ndim:  # rsciio describes every dimension; if not, trust the shape only
        axes = [{"navigate": i < data.ndim - 2} for i in range(data.ndim)]
    keep = [i for i, n in enumerate(data.shape) if n != 1]
    if len(keep) != data.ndim:
        data = data[tuple(slice(None) if n != 1 else 0 for n in data.shape)]
        axes = [axes[i] for i in keep]
    return data, axes


def describe(signal: dict) -> str:
    """``'HAADF' 2048x2048 uint16`` style summary for messages and the header."""
    data = signal["data"]
    kind = "image" if is_image(signal) else "spectrum" if _is_spectral(signal) else "data"
    title = _title(signal) or "untitled"
    return f"{title!r} {kind} {'x'.join(map(str, data.shape))} {data.dtype}"


def _is_spectral(signal: dict) -> bool:
    _, axes = _squeezed(signal)
    return any(
        not a.get("navigate", False) and str(a.get("units", "")).lower() in ("ev", "kev") for a in axes
    )


def is_image(signal: dict) -> bool:
    """Two signal axes at the end (an image), optionally one navigation axis in front (a series)."""
    data, axes = _squeezed(signal)
    if data.dtype.names is not None or data.ndim not in (2, 3):  # structured (RGB) data: not supported
        return False
    signal_axes = [i for i, a in enumerate(axes) if not a.get("navigate", False)]
    return signal_axes == [data.ndim - 2, data.ndim - 1] and not _is_spectral(signal)


def _calibration(axes: list[dict], letters: str) -> tuple[dict[str, float], str | None]:
    """Pixel sizes of the axes whose units are lengths, all in the unit of the x axis."""
    sizes: dict[str, float] = {}
    unit = None
    for letter in reversed(letters):  # x first: its unit becomes the image's unit
        axis = axes[letters.index(letter)]
        axis_unit = normalize_unit(axis.get("units"))
        scale = axis.get("scale")
        if axis_unit is None or scale is None or not np.isfinite(scale) or float(scale) <= 0:
            continue
        unit = unit or axis_unit
        sizes[letter] = convert(float(scale), axis_unit, unit)
    return sizes, unit


def pick_image(path: Path, signals: list[dict], fmt: str, *, what: str) -> Image:
    """The largest 2D image (the first one on ties); failing that the largest image series.

    ``meta.header`` says which dataset was taken (``dataset``, ``dataset_index``) and lists them all.
    """
    summary = [describe(s) for s in signals]
    candidates = [(i, s) for i, s in enumerate(signals) if is_image(s)]
    if not candidates:
        holds = "; ".join(summary) if summary else "no datasets at all"
        raise InputError(f"{path}: this {what} holds no image data ({holds})")

    def rank(item: tuple[int, dict]) -> tuple[int, int, int]:
        i, s = item
        data, _ = _squeezed(s)
        return (data.ndim == 2, int(np.prod(data.shape[-2:])), -i)

    index, signal = max(candidates, key=rank)
    data, axes = _squeezed(signal)
    letters = "yx" if data.ndim == 2 else "zyx"
    pixel_size, unit = _calibration(axes, letters)
    header = {
        "dataset": _title(signal),
        "dataset_index": index,
        "datasets": summary,
        "calibration": [
            {k: (v.item() if isinstance(v, np.generic) else v) for k, v in a.items() if k != "navigate"}
            for a in axes
        ],
    }
    meta = ImageMeta(axes=letters, pixel_size=pixel_size, unit=unit, source=path, format=fmt, header=header)
    return Image(data, meta)
