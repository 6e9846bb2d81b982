"""EM image types from the shared data folder: the known classes and their split by image, the image
types held out as unknown, class-balanced training patches, fixed validation patches and tiny
synthetic data in the same layout.

Paths are relative to the data folder (``../shared/data``); see README.md for the split and why.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from emzoo.errors import InputError
from emzoo.train.split import natural_key

CLASSES = ("ssTEM", "HAADF_STEM", "BF_STEM", "noisy_TEM")
LONG_NAMES = {
    "ssTEM": "serial-section TEM of stained tissue (ISBI 2012, Drosophila VNC)",
    "HAADF_STEM": "HAADF STEM of supported metal nanoparticles (bright particles)",
    "BF_STEM": "bright-field STEM of supported metal nanoparticles (dark particles)",
    "noisy_TEM": "short-exposure, noisy TEM of tissue (EMDiffuse)",
}
ISBI, STEM, NOISY = "isbi2012_membranes", "stem_nanoparticles", "noisy_tem"
BRIGHT_FIELD = ("PtC1", "PtC2", "PtCo1", "PtCo3", "Pt_carbon1", "Pt_carbon2")  # dark particles
# the STEM images of the particle counter's own split (training/particle_counting/data.py)
STEM_TEST = ("Cu4", "Pd_silica3", "Pt_carbon1", "PtCo1", "PtW2", "Ru2")
STEM_VAL = ("Cu_silica1", "Pd1", "PtC2", "PtW5")
SSTEM_VAL, SSTEM_TEST = range(15, 20), range(20, 30)  # unlabelled slices: contiguous blocks
NOISY_DEMO = {"9": "train", "27": "val", "64": "test"}  # noisy_tem/bioimageio_demo_inputs
SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
# image types never trained on (evaluation only): name -> files or folders, and for volumes the z step
UNKNOWN = {
    "cryo-EM": (["cryoem_micrographs/epu2.9_example.mrc", "cryoem_micrographs/fei-extended.mrc"], 0),
    "SEM": (["sem_denoising", "sem_denoising/25_sigma"], 0),
    "atomic STEM": (["em_file_formats"], 0),
    "tomogram slices": (["cryoet_tomogram/tomo.tif"], 10),
}
UNKNOWN_SUFFIXES = (".mrc", ".jpg", ".tif", ".dm3", ".emd", ".hspy")


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES]
    return sorted(found, key=lambda p: natural_key(p.name))


def _role_sstem(path: Path) -> str:
    if path.parent.name == "image":
        return "train"
    k = int(path.stem) if path.stem.isdigit() else -1
    return "test" if k in SSTEM_TEST else "val" if k in SSTEM_VAL else "train"


def _role_stem(path: Path) -> str:
    return "test" if path.stem in STEM_TEST else "val" if path.stem in STEM_VAL else "train"


def _role_noisy(path: Path) -> str:
    folder = path.parent.name
    if folder == "noisy_patches_7x7":
        row = re.match(r"(\d+)_\d+$", path.stem)
        r = int(row.group(1)) if row else 0
        return "test" if r == 6 else "val" if r == 5 else "train"
    if folder == "bioimageio_demo_inputs":
        return NOISY_DEMO.get(path.stem, "train")
    return "test" if path.stem == "1" else "train"  # microns_demo, mouse_liver_demo: 0 trains, 1 tests


# class -> (folders under the data folder, which files of them belong to it, their role)
_SOURCES: dict[str, tuple[tuple[str, ...], Callable[[Path], bool], Callable[[Path], str]]] = {
    "ssTEM": ((f"{ISBI}/train/image", f"{ISBI}/unlabeled"), lambda p: True, _role_sstem),
    "HAADF_STEM": ((f"{STEM}/images",), lambda p: p.stem not in BRIGHT_FIELD, _role_stem),
    "BF_STEM": ((f"{STEM}/images",), lambda p: p.stem in BRIGHT_FIELD, _role_stem),
    "noisy_TEM": (
        tuple(
            f"{NOISY}/{f}"
            for f in ("noisy_patches_7x7", "bioimageio_demo_inputs", "microns_demo", "mouse_liver_demo")
        ),
        lambda p: True,
        _role_noisy,
    ),
}


def labelled(data_dir: Path) -> list[tuple[str, int, str]]:
    """``(relative path, class index, role)`` of every known-class image under ``data_dir``."""
    root = Path(data_dir)
    rows = []
    for k, name in enumerate(CLASSES):
        folders, belongs, role = _SOURCES[name]
        for folder in folders:
            for p in _files(root / folder):
                if belongs(p):
                    rows.append((p.relative_to(root).as_posix(), k, role(p)))
    return rows


def check(data_dir: Path) -> None:
    """Every class needs training, validation and test images: one InputError line otherwise."""
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"{root}: no such data folder")
    rows = labelled(root)
    for k, name in enumerate(CLASSES):
        roles = {r for _, c, r in rows if c == k}
        if roles != {"train", "val", "test"}:
            folders = ", ".join(_SOURCES[name][0])
            missing = ", ".join(sorted({"train", "val", "test"} - roles))
            raise InputError(
                f"{root}: class {name} has no {missing} images (looked in {folders}); expected the shared "
                "data folder (isbi2012_membranes, stem_nanoparticles, noisy_tem)"
            )


def split(data_dir: Path) -> dict[str, list[str]]:
    rows = labelled(data_dir)
    return {role: [p for p, _, r in rows if r == role] for role in ("train", "val", "test")}


def label(name: str, data_dir: Path) -> int:
    return next(c for p, c, _ in labelled(data_dir) if p == name)


def read_plane(path: Path, z_step: int = 0) -> Iterator[np.ndarray]:
    """The 2D planes of one file in its own dtype (RGB averaged; a volume: every ``z_step``-th slice,
    the middle one when 0)."""
    from emzoo.io import read_image

    image = read_image(path)
    a, axes = np.asarray(image.data), image.meta.axes
    if "c" in axes:
        a = a.mean(axis=axes.index("c"))
        axes = axes.replace("c", "")
    if a.ndim == 2:
        yield a
    elif a.ndim == 3:
        picks = range(0, a.shape[0], z_step) if z_step else [a.shape[0] // 2]
        for z in picks:
            yield a[z]
    else:
        raise InputError(f"{path}: expected a 2D image or a 3D volume, found axes {image.meta.axes}")


def load(data_dir: Path, names: list[str]) -> list[tuple[str, int, np.ndarray]]:
    """``(name, class index, raw 2D image)`` of the named known-class images."""
    classes = {p: c for p, c, _ in labelled(data_dir)}
    return [(n, classes[n], next(read_plane(Path(data_dir) / n))) for n in names]


def unknown(data_dir: Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """The held-out image types present under ``data_dir``: type -> ``[(name, raw 2D image)]``."""
    root = Path(data_dir)
    found: dict[str, list[tuple[str, np.ndarray]]] = {}
    for kind, (paths, z_step) in UNKNOWN.items():
        files = []
        for rel in paths:
            p = root / rel
            if p.is_dir():
                files += sorted(
                    f for f in p.iterdir() if f.is_file() and f.suffix.lower() in UNKNOWN_SUFFIXES
                )
            elif p.is_file():
                files.append(p)
        planes = []
        for f in files:
            for z, plane in enumerate(read_plane(f, z_step)):
                name = f.relative_to(root).as_posix() + (f"[z={z * z_step}]" if z_step else "")
                planes.append((name, plane))
        if planes:
            found[kind] = planes
    return found


def fixed_patches(image: np.ndarray, patch: int, grid: int) -> np.ndarray:
    """The ``grid x grid`` patches the packaged network cuts from ``image`` (network.GridPatches):
    ``(grid**2, patch, patch)`` float32, edge pixels repeated for images smaller than a patch."""
    a = np.asarray(image, np.float32)
    index = []
    for n in a.shape:
        span = max(n - patch, 0)
        starts = [(2 * i + 1) * span // (2 * grid) for i in range(grid)]
        index.append([np.minimum(s + np.arange(patch), n - 1) for s in starts])
    return np.stack([a[np.ix_(iy, ix)] for iy in index[0] for ix in index[1]])


class PatchDataset(Dataset):
    """Random training patches, class-balanced: item ``i`` of epoch ``e`` draws (from
    ``default_rng([seed, e, i])``) a class, one of its images, a ``patch`` px square of it, and a random
    flip and quarter turn. Returns ``(raw patch (1, p, p) float32, class index)``."""

    def __init__(self, images: list[tuple[str, int, np.ndarray]], patch: int, length: int, seed: int):
        self.by_class = [
            [np.asarray(a, np.float32) for _, c, a in images if c == k] for k in range(len(CLASSES))
        ]
        self.by_class = [imgs for imgs in self.by_class if imgs]
        self.labels = sorted({c for _, c, _ in images})
        self.patch, self.length, self.seed, self.epoch = patch, length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        k = int(rng.integers(len(self.by_class)))
        imgs = self.by_class[k]
        a = imgs[int(rng.integers(len(imgs)))]
        p = self.patch
        if min(a.shape) < p:  # a small image: edge pixels repeated, as the packaged network does
            a = np.pad(a, [(0, max(p - n, 0)) for n in a.shape], mode="edge")
        y, x = (int(rng.integers(n - p + 1)) for n in a.shape)
        crop = a[y : y + p, x : x + p]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.rot90(crop, int(rng.integers(4)))
        return torch.from_numpy(np.ascontiguousarray(crop)[None]), torch.tensor(self.labels[k])


class FixedPatches(Dataset):
    """Validation patches: ``per_class`` of each class, cut at seeded random places of its images (in
    turn), so that the mean accuracy over them is the balanced accuracy."""

    def __init__(self, images: list[tuple[str, int, np.ndarray]], patch: int, per_class: int, seed: int):
        self.items: list[tuple[np.ndarray, int]] = []
        self.names: list[str] = []
        rng = np.random.default_rng(seed)
        for k in sorted({c for _, c, _ in images}):
            own = [(n, a) for n, c, a in images if c == k]
            for j in range(per_class):
                name, a = own[j % len(own)]
                a = np.asarray(a, np.float32)
                if min(a.shape) < patch:
                    a = np.pad(a, [(0, max(patch - n, 0)) for n in a.shape], mode="edge")
                y, x = (int(rng.integers(n - patch + 1)) for n in a.shape)
                self.items.append((np.ascontiguousarray(a[y : y + patch, x : x + patch])[None], k))
                self.names.append(f"{CLASSES[k]}_{j}_{Path(name).stem}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        patch, k = self.items[i]
        return torch.from_numpy(patch), torch.tensor(k)


# -- tiny synthetic data (tests) --------------------------------------------------------------------


def _texture(kind: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """A 2D uint8 image whose texture depends on the class: membranes (lines), bright blobs, dark
    blobs, plain noise."""
    yy, xx = np.mgrid[:size, :size]
    base = rng.normal(128, 10, (size, size))
    if kind == 0:
        base -= 60 * (np.sin(xx / 3.0 + rng.random() * 6) > 0.8)
    elif kind in (1, 2):
        for _ in range(6):
            cy, cx = rng.integers(size, size=2)
            blob = 80 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 20.0)
            base += blob if kind == 1 else -blob
    else:
        base = rng.normal(128, 50, (size, size))
    return np.clip(base, 0, 255).astype(np.uint8)


def make_synthetic(out_dir: Path, size: int = 64) -> Path:
    """The shared data's layout with tiny synthetic images (every file of the split, plus one image
    of two unknown types)."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    files = {
        0: [f"{ISBI}/train/image/{i}.png" for i in range(3)]
        + [f"{ISBI}/unlabeled/{i}.png" for i in (0, 15, 20)],
        1: [f"{STEM}/images/{n}.jpg" for n in ("Cu1", "Pd1", "Cu4")],
        2: [f"{STEM}/images/{n}.jpg" for n in ("PtC1", "PtC2", "PtCo1")],
        3: [f"{NOISY}/noisy_patches_7x7/{r}_0.tif" for r in (0, 5, 6)],
    }
    for k, names in files.items():
        for rel in names:
            path = out_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            image = _texture(k, rng, size)
            if path.suffix == ".tif":
                tifffile.imwrite(path, image.astype(np.uint16) * 100)
            else:
                Image.fromarray(image).save(path)
    (out_dir / "sem_denoising").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.tile(np.linspace(0, 255, size, dtype=np.uint8), (size, 1))).save(
        out_dir / "sem_denoising/BSE.jpg"
    )
    (out_dir / "cryoet_tomogram").mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(
        out_dir / "cryoet_tomogram/tomo.tif", rng.normal(0, 1, (3, size, size)).astype(np.float32)
    )
    return out_dir
