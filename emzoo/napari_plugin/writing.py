"""The napari writer: image and labels layers to TIFF, MRC or OME-Zarr through emzoo's writers
(:func:`emzoo.io.write.write_image`: atomic, with emzoo's mark), the layer's scale kept as the pixel
size (in the layer's unit; none for uncalibrated layers)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.errors import UsageError, literal
from emzoo.io.meta import Image
from emzoo.io.write import check_writable, writable_dtype, write_image
from emzoo.napari_plugin.layers import image_from_layer

# file name endings -> emzoo writer (longest first: .ome.zarr before .zarr)
FORMATS = {
    ".ome.zarr": "ome-zarr",
    ".zarr": "ome-zarr",
    ".ome.tiff": "tiff",
    ".ome.tif": "tiff",
    ".tiff": "tiff",
    ".tif": "tiff",
    ".mrc": "mrc",
}


def format_for(path: str | Path) -> str:
    """The emzoo writer for a file name, by its ending; :class:`UsageError` for any other."""
    name = str(path).lower().rstrip("/")
    for suffix, fmt in FORMATS.items():
        if name.endswith(suffix):
            return fmt
    known = ", ".join(FORMATS)
    raise UsageError(f"{literal(path)}: emzoo's napari writer writes {known}; choose one of these endings")


def layer_image(data: Any, attributes: Mapping[str, Any]) -> Image:
    """The emzoo image of a layer-data tuple's data and attributes (see :mod:`emzoo.napari_plugin.layers`)."""
    if attributes.get("multiscale"):
        data = data[0]
    return image_from_layer(data, attributes)


def write_layer(path: str | Path, data: Any, attributes: Mapping[str, Any], *, labels: bool = False) -> str:
    """Write one layer; labels as the smallest unsigned integer type that holds them (where the
    format holds it)."""
    fmt = format_for(path)
    image = layer_image(data, attributes)
    array = image.data  # lazy data stays lazy where it is written as it is (MRC copies slab by slab)
    if labels and np.dtype(array.dtype).kind in "iub":
        array = np.asarray(array)
        if array.size == 0 or int(array.min()) >= 0:
            top = int(array.max()) if array.size else 0
            array = array.astype(np.uint16 if top < 2**16 else np.uint32)
    check_writable(fmt, array.dtype, f"layer {literal(repr(attributes.get('name', '')))}")
    if writable_dtype(array.dtype) != np.dtype(array.dtype):
        array = np.asarray(array).astype(writable_dtype(array.dtype))
    return str(write_image(path, array, image.meta, format=fmt))


def write_image_layer(path: str, data: Any, attributes: dict) -> list[str]:
    """npe2 single-layer writer for image layers."""
    return [write_layer(path, data, attributes)]


def write_labels_layer(path: str, data: Any, attributes: dict) -> list[str]:
    """npe2 single-layer writer for labels layers."""
    return [write_layer(path, data, attributes, labels=True)]
