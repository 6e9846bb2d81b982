"""TIFF, multi-page TIFF stacks, ImageJ and OME-TIFF through tifffile.

A stack of pages is a ZYX volume. The pixel size comes from OME metadata, ImageJ metadata, or the
resolution tags, in that order. Uncompressed files are memory-mapped, so only touched tiles are read.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import tifffile

from emzoo.errors import InputError, literal
from emzoo.io.limits import check_file_holds, check_memory
from emzoo.io.meta import Image, ImageMeta
from emzoo.io.registry import WRITTEN_BY, is_mark, register_reader, register_writer
from emzoo.io.units import convert, normalize_unit

# tifffile axis codes -> emzoo axis letters; Q/I/P (unnamed page sequences) are stacks of slices
_AXIS_CODES = {
    "Y": "y",
    "X": "x",
    "Z": "z",
    "C": "c",
    "S": "c",
    "T": "t",
    "Q": "z",
    "I": "z",
    "P": "z",
}
_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)


def _axes(series: tifffile.TiffPageSeries) -> str:
    letters = [_AXIS_CODES.get(code, "?") for code in series.axes]
    if "?" in letters or len(set(letters)) != len(letters):
        raise ValueError(f"TIFF axes {series.axes!r} cannot be mapped to z, y, x, c, t")
    return "".join(letters)


def _ome_pixel_size(tif: tifffile.TiffFile) -> tuple[dict[str, float], str | None]:
    xml = tif.ome_metadata or ""
    pixels = re.search(r"<(?:\w+:)?Pixels\b[^>]*>", xml)
    if pixels is None:
        return {}, None
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', pixels.group(0)))
    sizes: dict[str, float] = {}
    unit = None
    for axis in "xyz":
        value = attrs.get(f"PhysicalSize{axis.upper()}")
        if value is None:
            continue
        axis_unit = normalize_unit(attrs.get(f"PhysicalSize{axis.upper()}Unit", "µm"))
        if axis_unit is None:
            continue
        unit = unit or axis_unit
        sizes[axis] = convert(float(value), axis_unit, unit)
    return sizes, unit


def _resolution_pixel_size(tif: tifffile.TiffFile) -> tuple[dict[str, float], str | None]:
    """ImageJ's unit + resolution tags, or resolution in centimeters; inches (a print setting) are ignored."""
    page = tif.pages.first
    ij = tif.imagej_metadata or {}
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return {}, None
    if ij.get("unit"):
        unit, scale = normalize_unit(ij["unit"]), 1.0
    elif "ResolutionUnit" in tags and int(tags["ResolutionUnit"].value) == 3:
        unit, scale = "nanometer", 1e7  # pixels per centimeter -> nanometers per pixel
    else:
        return {}, None
    if unit is None:
        return {}, None
    sizes = {}
    for axis, tag in (("x", tags["XResolution"]), ("y", tags["YResolution"])):
        num, den = tag.value
        if num and (num, den) != (1, 1):
            sizes[axis] = scale * den / num
    if sizes and ij.get("unit") and ij.get("spacing"):
        sizes["z"] = float(ij["spacing"])
    return (sizes, unit) if sizes else ({}, None)


IFD_MIN_BYTES = 18  # a page's directory: tag count, one tag, next offset


def _check_page_chain(path: Path, tif: tifffile.TiffFile) -> None:
    """Refuse a damaged chain of pages before tifffile walks it: a next-page offset that points back
    into the chain makes it endless (half a million pages a second from a 1.5 kB file)."""
    limit = max(1, path.stat().st_size // IFD_MIN_BYTES)
    seen: set[int] = set()
    for i, page in enumerate(tif.pages):
        offset = int(page.offset)
        if offset in seen or i >= limit:
            raise InputError(
                f"{literal(path)}: damaged TIFF: its chain of pages loops (page {i} at byte {offset})"
            )
        seen.add(offset)


def _check_single_shape(tif: tifffile.TiffFile) -> None:
    series = tif.series
    if len(series) > 1 and not tif.is_ome:
        shapes = sorted({tuple(s.shape) for s in series})
        if len(shapes) > 1:
            raise ValueError(
                f"its pages differ in shape ({', '.join('x'.join(map(str, s)) for s in shapes[:4])}); "
                "emzoo reads a multi-page TIFF as one stack only when all pages have the same shape: "
                "split it into one file per shape"
            )


def _check_claimed_size(path: Path, series: tifffile.TiffPageSeries, contiguous: bool) -> None:
    """Refuse a series whose header claims more than the file holds (uncompressed) or more than the
    memory available (compressed: decompressed whole), before anything is allocated."""
    nbytes = int(np.prod(series.shape, dtype=object)) * np.dtype(series.dtype).itemsize
    what = f"{'x'.join(map(str, series.shape))} {np.dtype(series.dtype).name}"
    for page in series.pages[:64]:
        # a damaged header can claim millions of strips or tiles that the file's offset table lacks;
        # tifffile would then allocate and scan all of them (minutes, GBs) before failing
        chunked = getattr(page, "chunked", None)
        offsets = getattr(page, "dataoffsets", None)
        if page is not None and chunked and offsets is not None and len(offsets) < math.prod(chunked):
            raise InputError(
                f"{literal(path)}: damaged TIFF: a page of {what} needs {math.prod(chunked)} strips or "
                f"tiles, its offset table lists {len(offsets)}"
            )
    if contiguous:
        check_file_holds(path, int(series.dataoffset) + nbytes, what)
    else:
        check_memory(f"{path}: its compressed {what} data", nbytes, "decompress it in parts first")


@register_reader("tiff", (".tif", ".tiff", ".ome.tif", ".ome.tiff"))
def read_tiff(path: Path) -> Image:
    with tifffile.TiffFile(path) as tif:
        _check_page_chain(path, tif)
        _check_single_shape(tif)
        series = tif.series[0]
        axes = _axes(series)
        pixel_size, unit = _ome_pixel_size(tif) if tif.is_ome else ({}, None)
        if not pixel_size:
            pixel_size, unit = _resolution_pixel_size(tif)
        contiguous = series.dataoffset is not None
        _check_claimed_size(path, series, contiguous)
    data = tifffile.memmap(path, mode="r") if contiguous else tifffile.imread(path)
    data = data.reshape(series.shape) if data.shape != tuple(series.shape) else data
    meta = ImageMeta(
        axes=axes,
        pixel_size={a: s for a, s in pixel_size.items() if a in axes},
        unit=unit,
        source=path,
        format="tiff",
    )
    return Image(data, meta)


def _marked(path: Path) -> bool:
    with tifffile.TiffFile(path) as tif:
        return is_mark(tif.pages.first.software)


@register_writer("tiff", ".tif", marked=_marked)
def write_tiff(path: Path, data, meta: ImageMeta) -> None:
    """Write ImageJ-compatible TIFF (uint8/uint16/float32) with the pixel size, else plain TIFF; the
    ``Software`` tag holds emzoo's mark (:mod:`emzoo.io.write`)."""
    arr = np.asarray(data)
    axes = meta.axes.upper()
    px = meta.pixel_size
    kwargs: dict = {"photometric": "minisblack", "software": WRITTEN_BY}
    if arr.dtype in _IMAGEJ_DTYPES and set(axes) <= set("TZCYX") and _imagej_order(axes):
        metadata: dict = {"axes": axes}
        if meta.unit and "x" in px and "y" in px:
            from emzoo.io.units import short_unit

            metadata["unit"] = {"µm": "micron", "Å": "angstrom"}.get(
                short_unit(meta.unit), short_unit(meta.unit)
            )
            kwargs["resolution"] = (1.0 / px["x"], 1.0 / px["y"])
            if "z" in px:
                metadata["spacing"] = px["z"]
        tifffile.imwrite(path, arr, imagej=True, metadata=metadata, **kwargs)
        return
    if meta.unit and "x" in px and "y" in px:
        cm = [convert(px[a], meta.unit, "centimeter") for a in ("x", "y")]
        kwargs.update(resolution=(1.0 / cm[0], 1.0 / cm[1]), resolutionunit="CENTIMETER")
    tifffile.imwrite(path, arr, metadata={"axes": axes}, **kwargs)


def _imagej_order(axes: str) -> bool:
    order = "TZCYX"
    positions = [order.index(a) for a in axes]
    return positions == sorted(positions) and axes.endswith("YX")
