"""Electron-microscopy HDF5 and TIA files through rosettasciio: Velox/NCEM ``.emd``, HyperSpy ``.hspy``
and TIA ``.ser``.

An EMD file may hold several datasets (HAADF and other detector images, EDS maps, spectra): the reader
takes the largest 2D image (the first one on ties), says which in ``meta.header["dataset"]`` and lists all
of them in ``meta.header["datasets"]``. EMD data stays lazy (dask over HDF5); a SER file is small and
read at once. A HyperSpy file holds one signal (an image, an image stack, or a spectrum: refused), lazy
too. Pixel size and unit come from the axes' calibration (scale and units).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from emzoo.errors import InputError, literal
from emzoo.io.formats.rsciio_files import pick_image
from emzoo.io.meta import Image
from emzoo.io.registry import register_reader


def _velox_contents(path: Path) -> str:
    """What the groups under ``/Data`` of a Velox file are, for the message when none is an image."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            data = f.get("Data")
            kinds = [f"{name} ({len(data[name])})" for name in data] if data is not None else []
    except Exception:
        return ""
    return f"; its /Data groups: {', '.join(kinds)}" if kinds else ""


HDF5_CHECK_SECONDS = 8
# reads every small dataset (metadata strings, version tags) of an HDF5 file: what rsciio reads first
_HDF5_CHECK = (
    "import sys, h5py\n"
    "def visit(name, obj):\n"
    "    if isinstance(obj, h5py.Dataset) and obj.size < 65536:\n"
    "        obj[()]\n"
    "with h5py.File(sys.argv[1], 'r') as f:\n"
    "    f.visititems(visit)\n"
)


def _check_hdf5_answers(path: Path, what: str = "EMD") -> None:
    """libhdf5 can hang for ever inside its C code on some damaged files (nothing in this process can
    interrupt it): read the file's metadata in a child process first, and refuse the file if that
    does not finish in time. A child that fails quickly is fine: the reader then gives its own error."""
    try:
        subprocess.run(
            [sys.executable, "-c", _HDF5_CHECK, str(path)],
            capture_output=True,
            timeout=HDF5_CHECK_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InputError(
            f"{literal(path)}: damaged {what} (HDF5) file: reading its metadata did not finish in "
            f"{HDF5_CHECK_SECONDS} s"
        ) from None


@register_reader("emd", (".emd",))
def read_emd(path: Path) -> Image:
    from rsciio.emd import file_reader

    _check_hdf5_answers(path)

    try:
        # Velox: images and EDS maps only (spectrum images are large and need the `sparse` package);
        # rsciio documents "image" but accepts "images"
        signals = file_reader(str(path), lazy=True, select_type="images")
    except Exception as e:
        raise InputError(
            f"{path}: not a readable EMD file (Velox or NCEM flavour), or it is damaged "
            f"({type(e).__name__}: {e})"
        ) from e
    if not signals:
        raise InputError(f"{path}: this EMD file holds no image data{_velox_contents(path)}")
    return pick_image(path, signals, "emd", what="EMD file")


@register_reader("hspy", (".hspy",))
def read_hspy(path: Path) -> Image:
    from rsciio.hspy import file_reader

    _check_hdf5_answers(path, "HyperSpy")
    try:
        signals = file_reader(str(path), lazy=True)
    except Exception as e:
        raise InputError(
            f"{literal(path)}: not a readable HyperSpy file, or it is damaged ({type(e).__name__}: "
            f"{literal(e)})"
        ) from e
    return pick_image(path, signals or [], "hspy", what="HyperSpy file")


@register_reader("ser", (".ser",))
def read_ser(path: Path) -> Image:
    from rsciio.tia import file_reader

    try:
        signals = file_reader(str(path), lazy=False)  # rsciio parses every element anyway
    except Exception as e:
        raise InputError(
            f"{path}: not a readable TIA .ser file, or it is damaged ({type(e).__name__}: {e})"
        ) from e
    return pick_image(path, signals, "ser", what="TIA series file")
