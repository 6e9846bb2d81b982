"""MRC / CCP4 maps (``.mrc``, ``.mrcs``, ``.map``, ``.rec``) through mrcfile.

Reading memory-maps the data block, so a 4096² micrograph or a large tomogram is only read where it is
touched. The voxel size comes from the header (cell size / sampling) in Å. 2D images are ``yx``; 3D
volumes, tomograms and ``.mrcs`` stacks of 2D images are ``zyx``. A map whose axes are stored in another
order (``mapc/mapr/maps`` other than 1/2/3, common in crystallographic maps) is returned as a transposed
view in physical z, y, x order, so that the axes and pixel sizes mean what they say.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np

from emzoo.errors import InputError
from emzoo.io.meta import Image, ImageMeta
from emzoo.io.registry import WRITTEN_BY, is_mark, register_reader, register_writer
from emzoo.io.units import convert

_log = logging.getLogger(__name__)

_HEADER_BYTES = 1024
_IMOD_STAMP = 1146047817  # "IMOD" stamp at byte 152: the file follows IMOD's conventions
_MRC_DTYPES = (np.float32, np.int16, np.uint16, np.int8, np.complex64)  # what we write as they are


def _read_header(path: Path):
    """The main header, checked against the file size; errors name the problem, not mrcfile's internals."""
    import mrcfile
    import mrcfile.utils

    size = path.stat().st_size
    if size < _HEADER_BYTES:
        raise InputError(
            f"{path}: file is {size} bytes, smaller than the {_HEADER_BYTES}-byte MRC header: "
            "truncated, or not an MRC file"
        )
    with open(path, "rb") as f:
        label = f.read(_HEADER_BYTES)[208:211]
    if label != b"MAP":
        raise InputError(
            f"{path}: not an MRC file, or its header is corrupt (no 'MAP ' label at byte 208; "
            "emzoo reads MRC2000/MRC2014 files)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with mrcfile.open(path, mode="r", header_only=True, permissive=True) as mrc:
                header = mrc.header.copy()
    except Exception as e:  # mrcfile raises ValueError for most corruption
        raise InputError(f"{path}: corrupt MRC header ({e})") from e
    try:
        dtype = mrcfile.utils.data_dtype_from_header(header)
    except ValueError:
        raise InputError(
            f"{path}: unsupported or corrupt MRC data mode {int(header.mode)} "
            "(known modes: 0 int8, 1 int16, 2 float32, 4 complex64, 6 uint16, 12 float16)"
        ) from None
    shape = tuple(int(n) for n in mrcfile.utils.data_shape_from_header(header))
    if min(shape) < 1 or int(header.nsymbt) < 0:
        raise InputError(
            f"{path}: the MRC header gives an empty or negative size {shape} (extended header "
            f"{int(header.nsymbt)} bytes): corrupt header?"
        )
    # Python integers: a corrupt header's sizes can overflow 64-bit arithmetic
    expected = _HEADER_BYTES + int(header.nsymbt) + math.prod(shape) * dtype.itemsize
    if size < expected:
        raise InputError(
            f"{path}: file is smaller than its header says ({size} bytes, expected {expected} for "
            f"{'x'.join(map(str, shape))} {dtype.name} plus {int(header.nsymbt)} bytes of extended "
            "header): truncated?"
        )
    if size > expected:
        _log.warning("%s: %d bytes after the data block are ignored", path, size - expected)
    return header


def _data_block(header) -> str:
    """``NXxNYxNZ dtype, N GB`` as the header claims it."""
    import mrcfile.utils

    shape = tuple(int(n) for n in mrcfile.utils.data_shape_from_header(header))
    try:
        dtype = mrcfile.utils.data_dtype_from_header(header)
    except ValueError:
        return "x".join(map(str, shape))
    return f"{'x'.join(map(str, shape))} {dtype.name}, {math.prod(shape) * dtype.itemsize / 1e9:.1f} GB"


def _imod_unsigned_bytes(header) -> bool:
    """IMOD writes mode-0 data as unsigned bytes unless its flags (bit 1) say signed."""
    if int(header.mode) != 0:
        return False
    order = header.dtype["mode"].str[0]  # "<" or ">": the file's byte order
    stamp, flags = np.frombuffer(header.tobytes()[152:160], dtype=f"{order}i4")
    return int(stamp) == _IMOD_STAMP and not int(flags) & 1


def _physical_order(header, ndim: int) -> tuple[int, ...] | None:
    """The transpose that brings the stored axes to physical z, y, x order, or None if they already are."""
    order = (int(header.mapc), int(header.mapr), int(header.maps))  # physical axis (1=x) of col/row/section
    if order == (1, 2, 3) or sorted(order) != [1, 2, 3]:
        return None
    if ndim == 3:  # array axes are (section, row, column) -> physical axes order[2], order[1], order[0]
        stored = (order[2], order[1], order[0])
        return tuple(stored.index(p) for p in (3, 2, 1))
    if ndim == 2 and order[:2] == (2, 1):  # a 2D image with rows along x
        return (1, 0)
    return None


@register_reader("mrc", (".mrc", ".mrcs", ".map", ".rec"))
def read_mrc(path: Path) -> Image:
    import mrcfile

    header = _read_header(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "file is N bytes larger than expected"
            with mrcfile.mmap(path, mode="r", permissive=True) as mrc:
                data = mrc.data  # a numpy memmap: it keeps its own mapping after the file is closed
                if data is None:  # permissive mode: mrcfile could not map the block it warned about
                    raise InputError(
                        f"{path}: the MRC data block ({_data_block(header)}) cannot be mapped into "
                        "memory: a corrupt header, or more than this process may address (ulimit -v)"
                    )
                voxel = mrc.voxel_size
                is_stack = bool(mrc.is_image_stack())
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{path}: not a readable MRC file ({_data_block(header)}: {e})") from e
    if _imod_unsigned_bytes(header):
        data = data.view(np.uint8)
    if data.ndim not in (2, 3):
        raise InputError(f"{path}: MRC data of {data.ndim} dimensions; expected a 2D image or a 3D volume")
    transpose = _physical_order(header, data.ndim)
    if transpose is not None:
        data = data.transpose(transpose)  # still a lazy memmap view
    axes = "yx" if data.ndim == 2 else "zyx"
    sizes = {"x": float(voxel.x), "y": float(voxel.y), "z": float(voxel.z)}
    if is_stack:  # a stack of separate 2D images (.mrcs): z is an image index, not a distance
        del sizes["z"]
    pixel_size = {a: s for a, s in sizes.items() if a in axes and np.isfinite(s) and s > 0}
    meta = ImageMeta(
        axes=axes,
        pixel_size=pixel_size,
        unit="angstrom" if pixel_size else None,
        source=path,
        format="mrc",
        header={
            "mode": int(header.mode),
            "shape_xyz": (int(header.nx), int(header.ny), int(header.nz)),
            "axis_order": (int(header.mapc), int(header.mapr), int(header.maps)),
            "transposed_to_zyx": transpose is not None,
            "space_group": int(header.ispg),
            "image_stack": is_stack,
            "extended_header": header.exttyp.tobytes().decode("ascii", "replace").strip("\x00 "),
            "extended_header_bytes": int(header.nsymbt),
            "origin_angstrom": tuple(float(header.origin[a]) for a in "xyz"),
            "byte_order": data.dtype.byteorder,
        },
    )
    return Image(data, meta)


def _target_dtype(data) -> np.dtype:
    """The MRC dtype for ``data``: kept where MRC has it, else the nearest that holds the values."""
    dtype = np.dtype(data.dtype)
    if dtype in [np.dtype(d) for d in _MRC_DTYPES]:
        return dtype
    if dtype == np.uint8 or dtype == np.bool_:
        return np.dtype(np.uint16)  # MRC mode 0 is signed; mode 6 (uint16) holds every uint8 value
    if dtype.kind == "f":
        return np.dtype(np.float32)
    if dtype.kind == "c":
        return np.dtype(np.complex64)
    if dtype.kind in "iu":
        lo, hi = (int(np.min(data)), int(np.max(data))) if data.size else (0, 0)
        for candidate in (np.int16, np.uint16):
            info = np.iinfo(candidate)
            if info.min <= lo and hi <= info.max:
                return np.dtype(candidate)
        if max(abs(lo), abs(hi)) > 2**24:
            _log.warning("integers up to %d do not fit MRC exactly: stored as float32", max(abs(lo), hi))
        return np.dtype(np.float32)
    raise InputError(f"cannot write {dtype} data as MRC (supported: float32, int16, uint16, uint8, int8)")


def _reserve(path: Path) -> None:
    """Allocate the blocks of the (sparse) file before its memory map is written: on a full disk a
    write to a mapped page kills the process (SIGBUS), while ``posix_fallocate`` fails with ENOSPC."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise


def _marked(path: Path) -> bool:
    import mrcfile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with mrcfile.open(path, mode="r", header_only=True, permissive=True) as mrc:
            return any(is_mark(label) for label in mrc.get_labels())


@register_writer("mrc", ".mrc", marked=_marked)
def write_mrc(path: Path, data, meta: ImageMeta) -> None:
    """Write a 2D (``yx``) or 3D (``zyx``) array with its voxel size in Å; the first header label
    holds emzoo's mark (:mod:`emzoo.io.write`).

    float32, int16, uint16 and int8 are written as they are; uint8 and bool as uint16 (MRC mode 6:
    MRC2014 mode 0 is signed), float64/float16 as float32, other integers as int16/uint16 when their
    values fit, else float32. The data is copied slab by slab, so lazy inputs are never loaded whole.
    """
    import mrcfile
    import mrcfile.utils

    if meta.axes not in ("yx", "zyx"):
        raise InputError(
            f"MRC holds a 2D image (yx) or a 3D volume/stack (zyx), not axes {meta.axes!r}: "
            "write TIFF or OME-Zarr instead"
        )
    if len(data.shape) != len(meta.axes):
        raise InputError(f"array of shape {tuple(data.shape)} does not match axes {meta.axes!r}")
    dtype = _target_dtype(data)
    sizes = {a: meta.pixel_size.get(a, 0.0) for a in "xyz"}
    if meta.unit and any(sizes.values()):
        sizes = {a: convert(s, meta.unit, "angstrom") if s else 0.0 for a, s in sizes.items()}
    elif any(sizes.values()):
        _log.warning("pixel size without a unit is not written to %s", path)
        sizes = dict.fromkeys("xyz", 0.0)
    with mrcfile.new_mmap(
        path, shape=tuple(data.shape), mrc_mode=mrcfile.utils.mode_from_dtype(dtype)
    ) as mrc:
        _reserve(path)
        out = mrc.data
        step = max(1, (64 * 2**20) // max(1, int(np.prod(data.shape[1:])) * dtype.itemsize))
        for start in range(0, data.shape[0], step):
            out[start : start + step] = np.asarray(data[start : start + step]).astype(dtype, copy=False)
        if meta.axes == "zyx" and meta.header.get("image_stack"):
            mrc.set_image_stack()
        mrc.voxel_size = (sizes["x"], sizes["y"], sizes["z"])
        mrc.add_label(WRITTEN_BY)
        mrc.update_header_stats()
