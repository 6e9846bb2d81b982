"""emzoo images <-> napari layer attributes, without napari: axes, pixel size as ``scale``, units.

A layer that emzoo made carries its axes and calibration in ``metadata["emzoo"]``; any other layer is
read by its number of dimensions (``yx``, ``zyx``, ``czyx``; RGB ``yxc``) and its ``scale`` and
``units`` (napari's default unit, ``pixel``, means: no calibration).

>>> import numpy as np
>>> from emzoo.io.meta import Image, ImageMeta
>>> kw = layer_kwargs(Image(np.zeros((4, 4)), ImageMeta("yx", {"y": 2.0, "x": 2.0}, "nanometer")), "a")
>>> kw["scale"], kw["units"]
((2.0, 2.0), ('nanometer', 'nanometer'))
>>> back = image_from_layer(np.zeros((4, 4)), kw)
>>> back.meta.axes, back.meta.pixel_size, back.meta.unit
('yx', {'y': 2.0, 'x': 2.0}, 'nanometer')
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.errors import InputError, literal
from emzoo.io.meta import Image, ImageMeta
from emzoo.io.units import normalize_unit

META_KEY = "emzoo"  # the layer metadata entry that holds an image's axes and calibration
PIXEL = "pixel"  # napari's unit of an uncalibrated axis
SPATIAL = "zyx"
_AXES_BY_NDIM = {1: "x", 2: "yx", 3: "zyx", 4: "czyx", 5: "tczyx"}

LayerData = tuple[Any, dict[str, Any], str]  # napari's (data, attributes, layer type)


def lazy(data: Any) -> Any:
    """``data`` as napari takes it without reading it: numpy arrays, memory maps, zarr and dask
    arrays as they are; other lazy arrays (a folder of slices) as a dask array of one chunk per
    leading index."""
    if isinstance(data, np.ndarray) or type(data).__module__.split(".")[0] in ("zarr", "dask"):
        return data
    import dask.array as da

    chunks = (1, *data.shape[1:]) if len(data.shape) > 2 else data.shape
    return da.from_array(data, chunks=chunks, asarray=True, fancy=False)


def layer_kwargs(image: Image, name: str) -> dict[str, Any]:
    """The attributes of an image layer for ``image``: name, ``scale`` (the pixel size; 1 where
    unknown), ``units``, ``axis_labels``, ``rgb`` and ``metadata["emzoo"]``."""
    meta = image.meta
    axes = meta.axes
    rgb = axes.endswith("c") and image.shape[-1] in (3, 4) and np.dtype(image.data.dtype) == np.uint8
    shown = axes[:-1] if rgb else axes
    unit = meta.unit if meta.pixel_size else None
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": tuple(float(meta.pixel_size.get(a, 1.0)) for a in shown),
        "axis_labels": tuple(shown),
        "metadata": {META_KEY: _record(meta)},
    }
    if unit is not None:
        kwargs["units"] = tuple(unit if a in meta.pixel_size else PIXEL for a in shown)
    if rgb:
        kwargs["rgb"] = True
    return kwargs


def _record(meta: ImageMeta) -> dict[str, Any]:
    return {
        "axes": meta.axes,
        "pixel_size": dict(meta.pixel_size),
        "unit": meta.unit,
        "source": str(meta.source) if meta.source is not None else None,
        "format": meta.format,
    }


def axes_of(ndim: int, attributes: Mapping[str, Any]) -> str:
    """The axis letters of layer data with ``ndim`` dimensions (RGB layers: the colour axis last)."""
    record = (attributes.get("metadata") or {}).get(META_KEY) or {}
    axes = record.get("axes")
    if isinstance(axes, str) and len(axes) == ndim:
        return axes
    if attributes.get("rgb"):
        return _AXES_BY_NDIM.get(ndim - 1, "") + "c"
    return _AXES_BY_NDIM.get(ndim, "")


def layer_unit(attributes: Mapping[str, Any]) -> str | None:
    """The length unit of the layer's calibrated axes (canonical spelling), or None."""
    for unit in attributes.get("units") or ():
        found = normalize_unit(str(unit))
        if found is not None:
            return found
    return None


def image_from_layer(data: Any, attributes: Mapping[str, Any]) -> Image:
    """An emzoo image of a layer's data and attributes (``scale``, ``units``, ``rgb``, ``metadata``:
    a layer-data tuple's, or :func:`layer_attributes` of a layer): the pixel size is the scale of the
    spatial axes when the layer has a length unit (else none)."""
    ndim = len(data.shape)
    axes = axes_of(ndim, attributes)
    if len(axes) != ndim:
        name = literal(repr(attributes.get("name", "")))
        raise InputError(f"layer {name}: {ndim}D data, emzoo reads 2D to 5D images")
    shown = axes[:-1] if attributes.get("rgb") else axes
    scale = tuple(attributes.get("scale") or (1.0,) * len(shown))
    unit = layer_unit(attributes)
    units = tuple(attributes.get("units") or ())
    pixel_size = {}
    if unit is not None:
        for i, (letter, size) in enumerate(zip(shown, scale, strict=False)):
            calibrated = i >= len(units) or normalize_unit(str(units[i])) is not None
            if letter in SPATIAL and calibrated:
                pixel_size[letter] = float(size)
    record = (attributes.get("metadata") or {}).get(META_KEY) or {}
    source = record.get("source")
    meta = ImageMeta(
        axes=axes,
        pixel_size=pixel_size,
        unit=unit if pixel_size else None,
        source=Path(source) if source else None,
        format=str(record.get("format") or ""),
    )
    return Image(data, meta)


def layer_attributes(layer: Any) -> dict[str, Any]:
    """The attributes of a napari layer object that :func:`image_from_layer` reads (duck-typed: the
    layers of ``napari.Viewer`` and ``ViewerModel`` alike)."""
    return {
        "name": layer.name,
        "scale": tuple(float(s) for s in layer.scale),
        "units": tuple(getattr(layer, "units", None) or ()),
        "rgb": bool(getattr(layer, "rgb", False)),
        "metadata": dict(layer.metadata),
    }


def layer_array(layer: Any) -> Any:
    """A layer's data; the full-resolution level of a multiscale layer."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data
