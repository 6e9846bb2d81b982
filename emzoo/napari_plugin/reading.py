"""The napari reader: every format emzoo reads, through emzoo's own readers (``emzoo.io``).

Files go through :func:`emzoo.io.lookup.read_image` (MRC, DM3/DM4, EMD, SER, TIFF, NPY, PNG/JPEG),
folders a reader claims (a Zarr / OME-Zarr store) too; any other folder of images is read as one
volume of numbered slices (:func:`emzoo.io.read_slice_folder`, as ``emzoo predict --stack``). Lazy
inputs stay lazy: a Zarr array, an MRC memory map, a dask array (DM, EMD), a dask array over the
slice files. Each layer has the file's pixel size as ``scale`` (and its unit as ``units``) and the
file's name as its name. Paths emzoo cannot read give None (napari then asks another reader).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from emzoo.errors import InputError
from emzoo.io.discover import expand_inputs
from emzoo.io.formats.stack import read_slice_folder
from emzoo.io.lookup import find_reader, read_image
from emzoo.io.meta import Image
from emzoo.napari_plugin.layers import LayerData, layer_kwargs, lazy

ReaderFunction = Callable[[str | Sequence[str]], list[LayerData]]


def _readable(path: Path) -> bool:
    """Can emzoo read ``path`` as one image: a file or store a reader claims, or a folder of slices."""
    if path.name.startswith(".") or not path.exists():
        return False
    if find_reader(path) is not None:
        return True
    if not path.is_dir():
        return False
    return any(p.is_file() and not p.name.startswith(".") and find_reader(p) for p in path.iterdir())


def get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """napari's ``get_reader`` hook: :func:`read_layers` when emzoo reads every path, else None."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or not all(_readable(Path(p)) for p in paths):
        return None
    return read_layers


def read(path: str | Path) -> list[tuple[Image, str]]:
    """The images at ``path`` and their layer names: a file or store with its format's reader; a
    plain folder as one volume of slices, or, when its images differ in format, shape or dtype, each
    image found in it (:func:`emzoo.io.discover.expand_inputs`) on its own."""
    path = Path(path)
    if not (path.is_dir() and find_reader(path) is None):
        return [(read_image(path), _name(path))]
    try:
        return [(read_slice_folder(path), _name(path))]
    except InputError:
        files = expand_inputs([path])
        if len(files) < 2:
            raise
        return [(read_image(f.path), _name(f.path)) for f in files]


def _name(path: Path) -> str:
    name = path.name
    for suffix in (".ome.zarr", ".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.is_file() else name


def read_layers(path: str | Sequence[str]) -> list[LayerData]:
    """One image layer per image (napari's reader function); raises :class:`InputError` (one line)
    when a path napari chose this reader for turns out unreadable."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    return [(lazy(image.data), layer_kwargs(image, name), "image") for p in paths for image, name in read(p)]
