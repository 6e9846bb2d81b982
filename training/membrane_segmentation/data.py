"""ISBI 2012 membrane data: the folder layout, the fixed split, the input tensor (its normalisation)
and tiny synthetic data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emzoo.errors import InputError
from emzoo.packaging.info import TensorInfo
from emzoo.train.data import Pair, check_pairs, find_pairs, read_array
from emzoo.train.split import block_split

# The split, by slice index of the ordered stack: the last TEST_SLICES slices are the test set, the
# VAL_SLICES before them the validation set, the rest (0-16 of the 25 ISBI slices) the training set.
# Contiguous blocks, because neighbouring 50 nm sections show the same cells (see README.md).
VAL_SLICES = 3
TEST_SLICES = 5
MEMBRANE, INTERIOR = 0, 255  # label values
EPS = 1e-6  # of the package's zero_mean_unit_variance

# The package's input, declared once: training normalises with its processing (``normalise``), the
# package declares it, and emzoo's runtime and bioimage.io run it on new images.
RAW = TensorInfo(
    id="raw",
    axes="cyx",
    channel_names=("raw",),
    description="ssTEM image, one grayscale channel, about 4 nm pixels",
    processing=(
        {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
        {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["channel", "y", "x"], "eps": EPS}},
        {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
    ),
)


def resolve(data_dir: Path) -> Path:
    """The folder holding ``image/`` and ``label/``: ``data_dir`` itself or its ``train/`` folder
    (so both ``isbi2012_membranes`` and ``isbi2012_membranes/train`` work)."""
    data_dir = Path(data_dir)
    if not (data_dir / "image").is_dir() and (data_dir / "train" / "image").is_dir():
        return data_dir / "train"
    return data_dir


def pairs(data_dir: Path) -> list[Pair]:
    return find_pairs(resolve(data_dir))


def check(data_dir: Path) -> None:
    """Every image has a same-sized 0/255 label and there are enough slices for the split."""
    found = pairs(data_dir)
    minimum = VAL_SLICES + TEST_SLICES + 1
    if len(found) < minimum:
        raise InputError(
            f"{resolve(data_dir)}: {len(found)} labelled slices, the fixed split needs at least {minimum} "
            f"({TEST_SLICES} test, {VAL_SLICES} validation, 1+ training)"
        )
    check_pairs(found, ndim=2)
    for pair in found:
        values = np.unique(read_array(pair.label))
        if not set(values.tolist()) <= {MEMBRANE, INTERIOR}:
            raise InputError(
                f"{pair.label}: labels must be {MEMBRANE} (membrane) and {INTERIOR} (cell interior), "
                f"found values {values[:6].tolist()}"
            )


def split(data_dir: Path) -> dict[str, list[str]]:
    return block_split([p.name for p in pairs(data_dir)], val=VAL_SLICES, test=TEST_SLICES)


def normalise(image: np.ndarray) -> np.ndarray:
    """The package's preprocessing of one raw image (``cyx`` or ``yx``): ``(x - mean) / (std + 1e-6)``
    over the whole image, in float32, by the same ops (:data:`RAW`) that the package runs."""
    return RAW.apply_processing(image)


def load(data_dir: Path, names: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Raw images (uint8, ``cyx``) and membrane masks (bool, ``cyx``) of the named slices."""
    by_name = {p.name: p for p in pairs(data_dir)}
    images = [read_array(by_name[n].image)[None] for n in names]
    masks = [(read_array(by_name[n].label) == MEMBRANE)[None] for n in names]
    return images, masks


def make_synthetic(out_dir: Path, *, n: int = 10, size: int = 64, seed: int = 0) -> Path:
    """``n`` tiny ssTEM-like slices: Voronoi cells with dark 2-px membranes, blur and noise."""
    from PIL import Image
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    (out_dir / "image").mkdir(parents=True, exist_ok=True)
    (out_dir / "label").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        seeds = rng.uniform(0, size, (8, 2))
        dist = np.sort(np.hypot(yy[..., None] - seeds[:, 0], xx[..., None] - seeds[:, 1]), axis=-1)
        membrane = dist[..., 1] - dist[..., 0] < 2.0
        image = np.where(membrane, 70.0, 180.0) + rng.normal(0, 20, (size, size))
        image = np.clip(ndimage.gaussian_filter(image, 1.0), 0, 255).astype(np.uint8)
        label = np.where(membrane, MEMBRANE, INTERIOR).astype(np.uint8)
        Image.fromarray(image).save(out_dir / "image" / f"{i}.png")
        Image.fromarray(label).save(out_dir / "label" / f"{i}.png")
    return out_dir
