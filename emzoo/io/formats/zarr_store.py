"""Zarr stores and OME-Zarr (OME-NGFF) images: lazy reading, chunked writing, streaming output.

Reading returns the :class:`zarr.Array` itself, so only the chunks a tile touches are ever read. A folder
is claimed as one image when it is named ``*.zarr`` or holds ``.zgroup``/``.zattrs``/``.zarray``/
``zarr.json``. OME-NGFF ``multiscales`` metadata (0.1-0.5, Zarr v2 or v3) gives level 0, the axes and the
physical pixel size (``coordinateTransformations`` scale x the axes' units). A plain array gets axes
guessed from its shape like ``.npy``; a plain group is read when it holds exactly one array.

Writing produces OME-NGFF 0.4 (Zarr v2, ``/``-separated chunk keys): level 0 only, chunks of 512 px
in-plane (16 slices deep for volumes, one channel/time point per chunk). For prediction output that is
written tile by tile, use :func:`create_ome_zarr` and :func:`finalize_ome_zarr`.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.errors import InputError
from emzoo.io.formats.numpy_npy import guess_axes
from emzoo.io.meta import Image, ImageMeta
from emzoo.io.registry import WRITTEN_BY, is_mark, register_reader, register_writer
from emzoo.io.units import convert, normalize_unit

NGFF_VERSION = "0.4"
_NGFF_ORDER = "tczyx"  # NGFF 0.4: time, then channel, then space
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_MARKERS = (".zgroup", ".zattrs", ".zarray", "zarr.json")
_PENDING = "emzoo_pending_multiscales"  # set by create_ome_zarr, replaced by finalize_ome_zarr
_MARK = "emzoo"  # {"written_by": "emzoo VERSION"}: emzoo's mark on the stores it writes (emzoo.io.write)


def is_zarr_folder(path: Path) -> bool:
    """Does this folder look like a Zarr store (named ``*.zarr``, or holding Zarr metadata files)?"""
    return path.is_dir() and (
        path.name.lower().endswith(".zarr") or any((path / m).is_file() for m in _MARKERS)
    )


# --------------------------------------------------------------------------------------------- reading


@register_reader("zarr", (".zarr", ".ome.zarr"), probe=is_zarr_folder)
def read_zarr(path: Path) -> Image:
    import zarr

    if not path.is_dir():
        raise InputError(f"{path}: a Zarr store is a folder, but this is a file (unzip a zipped store first)")
    if not any((path / m).is_file() for m in (".zgroup", ".zarray", "zarr.json")):
        found = (
            "an empty folder" if not any(path.iterdir()) else "a folder without .zgroup, .zarray or zarr.json"
        )
        raise InputError(f"{path}: not a Zarr store ({found}); was it written completely?")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as e:
        raise InputError(
            f"{path}: broken Zarr store: its metadata cannot be read ({type(e).__name__}: {e})"
        ) from e
    if isinstance(node, zarr.Array):
        return _plain_array(path, node, {})
    attrs = dict(node.attrs)
    ome = attrs.get("ome", attrs)  # NGFF 0.5 (Zarr v3) nests its metadata under "ome"
    if "multiscales" in ome:
        return _read_ngff(path, node, ome["multiscales"])
    if _PENDING in attrs:
        raise InputError(
            f"{path}: an OME-Zarr that emzoo started but never finalised (the write was interrupted?): "
            "its pixels may be incomplete; write it again"
        )
    arrays = sorted(node.array_keys())
    if len(arrays) == 1:
        return _plain_array(path, node[arrays[0]], {"array": arrays[0]})
    if not arrays:
        raise InputError(f"{path}: this Zarr group holds no array and no OME-NGFF multiscales metadata")
    raise InputError(
        f"{path}: a Zarr group with {len(arrays)} arrays ({', '.join(arrays[:6])}) and no OME-NGFF "
        f"multiscales metadata: pass the array to read, e.g. {path / arrays[0]}"
    )


def _plain_array(path: Path, array, header: dict) -> Image:
    axes = guess_axes(tuple(array.shape))
    if not axes:
        raise InputError(
            f"{path}: a {array.ndim}D Zarr array has no default axes; store it as 2D (yx) or 3D (zyx), "
            "or as OME-Zarr with named axes"
        )
    return Image(array, ImageMeta(axes=axes, source=path, format="zarr", header=header))


def _scales(transforms: Any, ndim: int) -> np.ndarray:
    """The product of the ``scale`` entries in a coordinateTransformations list (ones if none)."""
    scale = np.ones(ndim)
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == "scale" and isinstance(t.get("scale"), list):
            if len(t["scale"]) != ndim:
                raise InputError(f"a scale transform has {len(t['scale'])} values for {ndim} axes")
            scale = scale * np.asarray(t["scale"], dtype=float)
    return scale


def _read_ngff(path: Path, group, multiscales) -> Image:
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise InputError(f"{path}: OME-NGFF 'multiscales' metadata is empty or malformed")
    ms = multiscales[0]
    datasets = ms.get("datasets") or []
    if not datasets or "path" not in datasets[0]:
        raise InputError(f"{path}: OME-NGFF multiscales metadata lists no dataset (resolution level)")
    level = str(datasets[0]["path"])
    try:
        array = group[level]
    except Exception:
        raise InputError(f"{path}: level 0 of the OME-Zarr ({level!r}) is missing from the store") from None
    ndim = array.ndim
    axes_meta = ms.get("axes")
    if axes_meta is None:  # NGFF 0.1/0.2: always 5D tczyx
        axes_meta = list(_NGFF_ORDER[-ndim:])
    names = [a if isinstance(a, str) else str(a.get("name", "")) for a in axes_meta]
    letters = "".join(n.lower() for n in names)
    if len(names) != ndim or len(letters) != ndim or not set(letters) <= set(_NGFF_ORDER):
        raise InputError(
            f"{path}: OME-NGFF axes {names} cannot be mapped to t, c, z, y, x for a {ndim}D array"
        )
    units = [None if isinstance(a, str) else a.get("unit") for a in axes_meta]
    try:
        scale = _scales(datasets[0].get("coordinateTransformations"), ndim) * _scales(
            ms.get("coordinateTransformations"), ndim
        )
    except InputError as e:
        raise InputError(f"{path}: OME-NGFF metadata: {e}") from None
    pixel_size: dict[str, float] = {}
    unit = None
    for letter in "xyz":  # the x axis's unit becomes the image's unit
        if letter not in letters:
            continue
        i = letters.index(letter)
        axis_unit = normalize_unit(units[i])
        if axis_unit is None or not np.isfinite(scale[i]) or scale[i] <= 0:
            continue
        unit = unit or axis_unit
        pixel_size[letter] = convert(float(scale[i]), axis_unit, unit)
    header = {
        "ngff_version": str(ms.get("version", multiscales[0].get("version", ""))),
        "name": ms.get("name"),
        "level": level,
        "levels": [str(d.get("path")) for d in datasets],
        "scale": [float(s) for s in scale],
        "units": units,
    }
    meta = ImageMeta(
        axes=letters, pixel_size=pixel_size, unit=unit, source=path, format="ome-zarr", header=header
    )
    return Image(array, meta)


# --------------------------------------------------------------------------------------------- writing


def ngff_axes_order(axes: str) -> str:
    """The axes in the order OME-NGFF 0.4 requires (``t``, ``c``, then ``z``, ``y``, ``x``)."""
    if len(set(axes)) != len(axes) or not set(axes) <= set(_NGFF_ORDER):
        raise InputError(f"axes {axes!r} cannot be written as OME-Zarr (letters t, c, z, y, x, each once)")
    spatial = sum(a in "zyx" for a in axes)
    if spatial not in (2, 3) or not 2 <= len(axes) <= 5:
        raise InputError(f"OME-Zarr (NGFF 0.4) needs 2 or 3 spatial axes among 2 to 5 axes, not {axes!r}")
    return "".join(a for a in _NGFF_ORDER if a in axes)


def ngff_multiscales(meta: ImageMeta, *, name: str | None = None) -> list[dict]:
    """OME-NGFF 0.4 ``multiscales`` metadata for one level (``"0"``) with ``meta``'s axes and pixel size."""
    axes = []
    scale = []
    for letter in meta.axes:
        entry: dict[str, Any] = {"name": letter, "type": _AXIS_TYPES[letter]}
        size = meta.pixel_size.get(letter) if letter in "zyx" else None
        if size is not None and meta.unit:
            entry["unit"] = normalize_unit(meta.unit) or meta.unit
        axes.append(entry)
        scale.append(float(size) if size is not None and meta.unit else 1.0)
    return [
        {
            "version": NGFF_VERSION,
            "name": name or (meta.source.name if meta.source else "image"),
            "axes": axes,
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
        }
    ]


def default_chunks(axes: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """512 px in-plane, 16 slices deep, one channel and one time point per chunk."""
    size = {"t": 1, "c": 1, "z": 16, "y": 512, "x": 512}
    return tuple(max(1, min(n, size[a])) for a, n in zip(axes, shape, strict=True))


def create_ome_zarr(
    path: str | Path,
    shape: tuple[int, ...],
    dtype,
    meta: ImageMeta,
    chunks: tuple[int, ...] | None = None,
    *,
    fill_value=0,
    name: str | None = None,
):
    """Create an empty OME-Zarr (NGFF 0.4) image at ``path`` and return its level-0 array for writing.

    ``meta.axes`` names the dimensions of ``shape`` and must already be in NGFF order (``t``, ``c``,
    ``z``, ``y``, ``x``: e.g. ``"cyx"``, not ``"yxc"``); ``meta.pixel_size``/``meta.unit`` become the scale
    transform and the axes' units. Fill the returned :class:`zarr.Array` tile by tile (``arr[z0:z1,
    y0:y1, x0:x1] = tile``), then call :func:`finalize_ome_zarr`: until then the store carries no
    ``multiscales`` metadata, so an interrupted write is never taken for a complete image (reading it
    raises an error that says so). ``path`` must not exist yet. ``name`` (default: the folder's name)
    is the image name stored in the metadata.

    Example::

        arr = create_ome_zarr("out.ome.zarr", (2048, 2048), "float32", ImageMeta("yx", {"y": 1.0, "x": 1.0},
                              "nanometer"))
        for (ys, xs), tile in predicted_tiles:
            arr[ys, xs] = tile
        finalize_ome_zarr(arr)
    """
    import zarr

    path = Path(path)
    shape = tuple(int(n) for n in shape)
    if len(shape) != len(meta.axes):
        raise InputError(f"shape {shape} does not match axes {meta.axes!r}")
    order = ngff_axes_order(meta.axes)
    if order != meta.axes:
        raise InputError(f"axes {meta.axes!r} are not in OME-NGFF order: transpose the data to {order!r}")
    if path.exists():
        raise InputError(f"{path}: already exists; remove it or choose another output path")
    chunks = tuple(chunks) if chunks is not None else default_chunks(meta.axes, shape)
    group = zarr.open_group(str(path), mode="w-", zarr_format=2)
    array = group.create_array(
        "0",
        shape=shape,
        dtype=np.dtype(dtype),
        chunks=chunks,
        fill_value=fill_value,
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )
    group.attrs[_PENDING] = ngff_multiscales(meta, name=name or path.name)
    group.attrs[_MARK] = {"written_by": WRITTEN_BY}
    return array


def finalize_ome_zarr(target) -> None:
    """Publish the NGFF ``multiscales`` metadata of a store made by :func:`create_ome_zarr`.

    ``target`` is the array it returned, or the store's path. Calling it twice does no harm.
    """
    import zarr

    if isinstance(target, str | Path):
        group = zarr.open_group(str(target), mode="r+")
    else:
        group = zarr.open_group(store=target.store, mode="r+")
    attrs = dict(group.attrs)
    pending = attrs.pop(_PENDING, None)
    if pending is None:
        if "multiscales" in attrs:
            return
        raise InputError(f"{group.store}: not a store made by create_ome_zarr (no pending metadata)")
    attrs["multiscales"] = pending
    group.attrs.put(attrs)


def _copy_chunks(src, dst, perm: tuple[int, ...]) -> None:
    """``dst[...] = src.transpose(perm)``, one destination chunk at a time (lazy sources stay lazy)."""
    grids = [range(0, n, c) for n, c in zip(dst.shape, dst.chunks, strict=True)]
    for corner in itertools.product(*grids):
        region = tuple(slice(s, s + c) for s, c in zip(corner, dst.chunks, strict=True))
        src_region = [slice(None)] * len(perm)
        for k, p in enumerate(perm):
            src_region[p] = region[k]
        dst[region] = np.asarray(src[tuple(src_region)]).transpose(perm)


def _marked(path: Path) -> bool:
    """Was this store written by emzoo? (its group attributes, read without zarr)"""
    import json

    attrs = json.loads((path / ".zattrs").read_text(encoding="utf-8"))
    return is_mark((attrs.get(_MARK) or {}).get("written_by"))


@register_writer("ome-zarr", ".ome.zarr", marked=_marked)
def write_ome_zarr(path: Path, data, meta: ImageMeta) -> None:
    """Write OME-NGFF 0.4 (level 0 only), transposing the axes to NGFF order where needed."""
    if len(data.shape) != len(meta.axes):
        raise InputError(f"array of shape {tuple(data.shape)} does not match axes {meta.axes!r}")
    order = ngff_axes_order(meta.axes)
    perm = tuple(meta.axes.index(a) for a in order)
    shape = tuple(data.shape[p] for p in perm)
    name = meta.source.name if meta.source else "image"  # not path.name: a temporary name (emzoo.io.write)
    array = create_ome_zarr(path, shape, np.dtype(data.dtype), meta.with_axes(order), name=name)
    _copy_chunks(data, array, perm)
    finalize_ome_zarr(path)
