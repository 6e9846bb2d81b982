"""Image/label folders and the torch datasets built from them.

:func:`find_pairs` and :func:`check_pairs` are what a use case's ``check_data`` usually calls: they
turn every data problem into one :class:`~emzoo.errors.InputError` line before training starts.
:class:`PairDataset` serves random augmented crops (training) or whole images (validation); its
sample ``i`` of epoch ``e`` is drawn from ``numpy.random.default_rng([seed, e, i])``, so an epoch is
reproduced exactly after ``--resume`` and with any number of loader workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from emzoo.errors import InputError
from emzoo.train.augment import Augmentation
from emzoo.train.split import natural_key

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".npy")


@dataclass(frozen=True)
class Pair:
    name: str  # the image's file name
    image: Path
    label: Path


def _images(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    found = {p.stem: p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes}
    return dict(sorted(found.items(), key=lambda kv: natural_key(kv[0])))


def find_pairs(
    data_dir: Path,
    *,
    image_dir: str = "image",
    label_dir: str = "label",
    suffixes: Sequence[str] = IMAGE_SUFFIXES,
) -> list[Pair]:
    """Match ``data_dir/<image_dir>/X.*`` with ``data_dir/<label_dir>/X.*`` (by file stem)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: no such data folder")
    images_at, labels_at = data_dir / image_dir, data_dir / label_dir
    layout = f"'{image_dir}/' and '{label_dir}/' folders with one label file per image"
    if not any(data_dir.iterdir()):
        raise InputError(f"{data_dir}: the data folder is empty; expected {layout}")
    if not images_at.is_dir():
        found = ", ".join(sorted(p.name for p in data_dir.iterdir())[:5])
        raise InputError(f"{data_dir}: no '{image_dir}/' folder (found: {found}); expected {layout}")
    images = _images(images_at, suffixes)
    if not images:
        raise InputError(f"{images_at}: no images ({', '.join(suffixes)}) found; the data folder is empty")
    labels = _images(labels_at, suffixes) if labels_at.is_dir() else {}
    missing = [images[s].name for s in images if s not in labels]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(
            f"{labels_at}: no label for {len(missing)} of {len(images)} images ({shown}); "
            f"each image needs a label file with the same name"
        )
    return [Pair(images[s].name, images[s], labels[s]) for s in images]


def read_array(path: Path) -> np.ndarray:
    """The pixels of one image file (through emzoo's readers), as a numpy array."""
    from emzoo.io import read_image

    return np.asarray(read_image(path).data)


def check_pairs(pairs: Sequence[Pair], *, ndim: int = 2) -> tuple[int, ...]:
    """Check that every image is ``ndim``-dimensional and its label has the same shape; returns the
    shape of the first image."""
    first: tuple[int, ...] = ()
    for pair in pairs:
        image, label = read_array(pair.image), read_array(pair.label)
        if image.ndim != ndim:
            raise InputError(f"{pair.image}: expected a {ndim}D grayscale image, found shape {image.shape}")
        if label.shape != image.shape:
            size = "x".join(map(str, image.shape))
            raise InputError(
                f"{pair.label}: label is {'x'.join(map(str, label.shape))} but its image {pair.name} "
                f"is {size}; labels must have the size of their image"
            )
        first = first or image.shape
    return first


class PairDataset(Dataset):
    """``(input, target)`` float32 tensors from lists of ``c+spatial`` arrays.

    With ``augmentation`` the dataset has ``length`` items, each a random image of the list augmented
    (random crops for training); without, item ``i`` is image ``i`` whole (validation).
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        *,
        names: Sequence[str] | None = None,
        augmentation: Augmentation | None = None,
        length: int | None = None,
        seed: int = 0,
    ):
        if len(images) != len(targets) or not images:
            raise ValueError(
                f"need as many targets as images, and at least one ({len(images)}/{len(targets)})"
            )
        self.images = [np.asarray(a, np.float32) for a in images]
        self.targets = [np.asarray(a, np.float32) for a in targets]
        self.names = list(names) if names is not None else [str(i) for i in range(len(images))]
        self.augmentation = augmentation
        self.length = length if augmentation is not None and length is not None else len(images)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer before each epoch: the random draws depend on it."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.augmentation is None:
            image, target = self.images[i], self.targets[i]
        else:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            k = int(rng.integers(len(self.images)))
            image, target = self.augmentation(self.images[k], self.targets[k], rng)
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(target))
