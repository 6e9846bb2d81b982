"""STEM nanoparticle data: folder layout, YOLO boxes, the fixed split, the input tensor (its
normalisation), density targets, training crops with scale augmentation, validation windows and tiny
synthetic data."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from emzoo.errors import InputError
from emzoo.packaging.info import TensorInfo
from emzoo.train.split import natural_key, seeded_split

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
EPS = 1e-6  # of the package's scale_range
MIN_BOX_PX = 2.0  # boxes smaller than this (a 0-px box exists in PtW6) count as this size

# The split of the 25 STEM images, by image (see README.md): one test image per material, mixing
# 640 px and 2048 px images and bright-field (dark particles) and HAADF (bright particles) contrast;
# validation likewise spread; everything else trains. Other folders get a seeded random split.
TEST = ("Cu4", "Pd_silica3", "Pt_carbon1", "PtCo1", "PtW2", "Ru2")
VAL = ("Cu_silica1", "Pd1", "PtC2", "PtW5")
FALLBACK_SEED = 0


@dataclass(frozen=True)
class Item:
    name: str  # the image's file name
    image: Path
    label: Path


@dataclass(frozen=True)
class Boxes:
    """Particles of one image in pixels: centres ``(n, 2)`` as (y, x) pixel indices (the centre of the
    top-left pixel is (0, 0)) and box sizes ``sqrt(w h)``."""

    centres: np.ndarray
    sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.centres)


def resolve(data_dir: Path) -> Path:
    data_dir = Path(data_dir)
    if not (data_dir / "images").is_dir() and (data_dir / "stem_nanoparticles" / "images").is_dir():
        return data_dir / "stem_nanoparticles"
    return data_dir


def items(data_dir: Path) -> list[Item]:
    """``images/X.jpg`` with ``labels/X.txt``, naturally sorted; every problem is one InputError."""
    root = resolve(data_dir)
    if not root.is_dir():
        raise InputError(f"{root}: no such data folder")
    images_at, labels_at = root / "images", root / "labels"
    layout = "'images/' (JPEG/PNG/TIFF) and 'labels/' (one YOLO .txt per image: class cx cy w h)"
    if not images_at.is_dir():
        found = ", ".join(sorted(p.name for p in root.iterdir())[:5]) or "nothing"
        raise InputError(f"{root}: no 'images/' folder (found: {found}); expected {layout}")
    found = sorted(
        (p for p in images_at.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: natural_key(p.stem),
    )
    if not found:
        raise InputError(f"{images_at}: no images ({', '.join(IMAGE_SUFFIXES)}); expected {layout}")
    missing = [p.name for p in found if not (labels_at / f"{p.stem}.txt").is_file()]
    if missing:
        raise InputError(
            f"{labels_at}: no label file for {len(missing)} of {len(found)} images "
            f"({', '.join(missing[:5])}); each image X.jpg needs labels/X.txt with one "
            "'class cx cy w h' line per particle"
        )
    return [Item(p.name, p, labels_at / f"{p.stem}.txt") for p in found]


def read_gray(path: Path) -> np.ndarray:
    """The image as a 2D array in its own dtype (RGB files, whose channels are equal here, are averaged)."""
    from emzoo.io import read_image

    image = read_image(path)
    a = np.asarray(image.data)
    axes = image.meta.axes
    if "c" in axes:
        a = (
            a.mean(axis=axes.index("c")).round().astype(a.dtype)
            if a.dtype.kind in "ui"
            else a.mean(axis=axes.index("c"))
        )
    if a.ndim != 2:
        raise InputError(f"{path}: expected a 2D (grey or RGB) image, found shape {a.shape}")
    return a


def read_boxes(label: Path, shape: tuple[int, int]) -> Boxes:
    """YOLO lines ``class cx cy w h`` (normalised to the image) -> centres and sizes in pixels."""
    text = label.read_text(encoding="utf-8").strip()
    if not text:
        return Boxes(np.zeros((0, 2)), np.zeros(0))
    try:
        rows = np.array([[float(v) for v in line.split()] for line in text.splitlines() if line.strip()])
    except ValueError as e:
        raise InputError(
            f"{label}: not a YOLO label file ({e}); expected 'class cx cy w h' per line"
        ) from None
    if rows.ndim != 2 or rows.shape[1] != 5:
        raise InputError(f"{label}: expected 5 numbers per line (class cx cy w h), found {rows.shape[-1]}")
    if rows[:, 1:].min() < 0 or rows[:, 1:3].max() > 1:
        raise InputError(f"{label}: box coordinates must be normalised to 0..1 (YOLO format)")
    h, w = shape
    # pixel-index coordinates (pixel i covers [i - 0.5, i + 0.5)), as the centres found in a map
    centres = np.column_stack([rows[:, 2] * h - 0.5, rows[:, 1] * w - 0.5])
    sizes = np.maximum(np.sqrt(rows[:, 3] * w * rows[:, 4] * h), MIN_BOX_PX)
    return Boxes(centres, sizes)


def check(data_dir: Path) -> None:
    found = items(data_dir)
    if len(found) < 3:
        raise InputError(f"{resolve(data_dir)}: {len(found)} labelled images; the split needs at least 3")
    for item in found:
        image = read_gray(item.image)
        if min(image.shape) < 64:
            raise InputError(f"{item.image}: {image.shape} is too small (at least 64x64 px)")
        read_boxes(item.label, image.shape)


def split(data_dir: Path) -> dict[str, list[str]]:
    """The documented split when the folder is the STEM data set; a seeded split otherwise."""
    names = [i.name for i in items(data_dir)]
    by_stem = {Path(n).stem: n for n in names}
    if set(TEST) | set(VAL) <= set(by_stem):
        test = [by_stem[s] for s in TEST]
        val = [by_stem[s] for s in VAL]
        train = [n for n in names if n not in test and n not in val]
        return {
            "train": sorted(train, key=natural_key),
            "val": sorted(val, key=natural_key),
            "test": sorted(test, key=natural_key),
        }
    n = len(names)
    return seeded_split(names, val=max(1, n // 6), test=max(1, n // 5), seed=FALLBACK_SEED)


def material(name: str) -> str:
    """``Pt_carbon1.jpg`` -> ``Pt``, ``PtCo3.jpg`` -> ``PtCo``, ``PtC2.jpg`` -> ``Pt`` (Pt on carbon)."""
    stem = re.split(r"[_\d]", Path(name).stem)[0]
    return "Pt" if stem == "PtC" else stem


def is_bright_field(image: np.ndarray) -> bool:
    """Dark particles on a bright background (bright-field), rather than HAADF's bright particles:
    the median lies in the upper part of the 1st-99th percentile range (0.53-0.80 for the six
    bright-field images of the data set, 0.01-0.37 for the HAADF ones)."""
    p1, p50, p99 = np.percentile(np.asarray(image, np.float64), [1, 50, 99])
    return bool(p99 > p1 and (p50 - p1) / (p99 - p1) > 0.45)


def raw_tensor(low: float, high: float) -> TensorInfo:
    """The package's input, declared once: ``scale_range`` between the ``low`` and ``high``
    percentiles of the whole image (the ``percentile_low`` and ``percentile_high`` parameters).
    Training normalises with its processing (:func:`normalise`); the package declares it."""
    return TensorInfo(
        id="raw",
        axes="cyx",
        channel_names=("raw",),
        description="STEM image (HAADF or bright field), one grey channel, particles 6-80 px",
        processing=(
            {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
            {
                "id": "scale_range",
                "kwargs": {
                    "axes": ["channel", "y", "x"],
                    "min_percentile": float(low),
                    "max_percentile": float(high),
                    "eps": EPS,
                },
            },
            {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
        ),
    )


def normalise(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """The package's preprocessing of one raw image (``yx`` or ``cyx``): ``(x - p_low) / (p_high -
    p_low + 1e-6)`` with linear percentiles of the whole image, in float32, by the same ops
    (:func:`raw_tensor`) that the package runs."""
    return raw_tensor(low, high).apply_processing(image)


def blob_sigmas(sizes: np.ndarray, params: dict) -> np.ndarray:
    """The Gaussian width of each particle's density blob (px): a fraction of its box size, clipped."""
    return np.clip(
        params["sigma_factor"] * np.asarray(sizes, np.float64), params["sigma_min"], params["sigma_max"]
    )


def render_density(shape: tuple[int, int], centres: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """A density map: one Gaussian per particle, each summing to 1 over the infinite pixel grid, so
    that the sum over any window is the (fractional) number of particles in it. Particles whose
    centre lies outside but whose blob reaches into the window contribute their part."""
    density = np.zeros(shape, np.float64)
    h, w = shape
    for (cy, cx), s in zip(np.asarray(centres, np.float64), np.asarray(sigmas, np.float64), strict=True):
        r = int(np.ceil(4 * s))
        iy, ix = int(np.floor(cy)), int(np.floor(cx))
        y0, y1, x0, x1 = max(iy - r, 0), min(iy + r + 2, h), max(ix - r, 0), min(ix + r + 2, w)
        if y0 >= y1 or x0 >= x1:
            continue
        # discrete Gaussian normalised over its full (untruncated) support, at the pixel indices
        full_y = np.exp(-0.5 * ((np.arange(iy - r, iy + r + 2) - cy) / s) ** 2)
        full_x = np.exp(-0.5 * ((np.arange(ix - r, ix + r + 2) - cx) / s) ** 2)
        norm = full_y.sum() * full_x.sum()
        gy = full_y[y0 - (iy - r) : y1 - (iy - r)]
        gx = full_x[x0 - (ix - r) : x1 - (ix - r)]
        density[y0:y1, x0:x1] += np.outer(gy, gx) / norm
    return density.astype(np.float32)


@dataclass
class Sample:
    """One image ready for training: normalised pixels and its particles."""

    name: str
    image: np.ndarray  # (y, x) float32, normalised
    boxes: Boxes


def load(data_dir: Path, names: list[str], params: dict) -> list[Sample]:
    by_name = {i.name: i for i in items(data_dir)}
    out = []
    for name in names:
        raw = read_gray(by_name[name].image)
        out.append(
            Sample(
                name,
                normalise(raw, params["percentile_low"], params["percentile_high"]),
                read_boxes(by_name[name].label, raw.shape),
            )
        )
    return out


def load_raw(data_dir: Path, names: list[str]) -> list[tuple[str, np.ndarray, Boxes]]:
    """Raw images (2D, own dtype) with their boxes, for evaluation and baselines."""
    by_name = {i.name: i for i in items(data_dir)}
    out = []
    for name in names:
        raw = read_gray(by_name[name].image)
        out.append((name, raw, read_boxes(by_name[name].label, raw.shape)))
    return out


def _resize(window: np.ndarray, size: int) -> np.ndarray:
    from skimage.transform import resize

    if window.shape == (size, size):
        return window
    return resize(
        window, (size, size), order=1, anti_aliasing=window.shape[0] > size, preserve_range=True
    ).astype(np.float32)


class CropDataset(Dataset):
    """Random training crops: a window of ``crop / s`` px (``s`` log-uniform in the scale range; with
    probability ``particle_focus`` placed so that it holds a randomly chosen particle) is resized to
    ``crop`` px, so particles appear ``s`` times their size; the density target is drawn
    for the resized crop (blob widths from the resized box sizes). Then flips, 90-degree rotations and
    contrast/brightness jitter. Sample ``i`` of epoch ``e`` comes from ``default_rng([seed, e, i])``."""

    def __init__(self, samples: list[Sample], params: dict, *, length: int, seed: int = 0):
        self.samples = samples
        self.p = params
        self.length = length
        self.seed = seed
        self.epoch = 0
        self.names = [s.name for s in samples]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        p, crop = self.p, self.p["crop_size"]
        sample = self.samples[int(rng.integers(len(self.samples)))]
        h, w = sample.image.shape
        s = float(np.exp(rng.uniform(np.log(p["scale_min"]), np.log(p["scale_max"]))))
        win = min(round(crop / s), h, w)
        s = crop / win
        if len(sample.boxes) and rng.random() < p["particle_focus"]:  # a window around a random particle
            cy, cx = sample.boxes.centres[int(rng.integers(len(sample.boxes)))]
            y0 = int(np.clip(cy - rng.uniform(0, win), 0, h - win))
            x0 = int(np.clip(cx - rng.uniform(0, win), 0, w - win))
        else:
            y0, x0 = int(rng.integers(0, h - win + 1)), int(rng.integers(0, w - win + 1))
        image = _resize(sample.image[y0 : y0 + win, x0 : x0 + win], crop)
        centres = (sample.boxes.centres - [y0, x0]) * s
        sizes = sample.boxes.sizes * s
        sigmas = blob_sigmas(sizes, p)
        near = np.all((centres > -4 * sigmas[:, None]) & (centres < crop + 4 * sigmas[:, None]), axis=1)
        target = render_density((crop, crop), centres[near], sigmas[near])
        image, target = image[None], target[None]
        if p["flips"]:
            for axis in (1, 2):
                if rng.random() < 0.5:
                    image, target = np.flip(image, axis), np.flip(target, axis)
        if p["rotations"]:
            k = int(rng.integers(4))
            image, target = np.rot90(image, k, axes=(1, 2)), np.rot90(target, k, axes=(1, 2))
        jitter = p["intensity_jitter"]
        if jitter > 0:
            image = image * (1 + rng.uniform(-jitter, jitter)) + rng.uniform(-jitter, jitter)
        return np.ascontiguousarray(image, np.float32), np.ascontiguousarray(target, np.float32)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.draw(np.random.default_rng([self.seed, self.epoch, i]))
        return torch.from_numpy(image), torch.from_numpy(target)


def densest_window(boxes: Boxes, shape: tuple[int, int], size: int, step: int = 32) -> tuple[int, int]:
    """Top-left corner of the ``size`` px window (on a ``step`` grid) holding the most particle centres."""
    h, w = shape
    best, corner = -1, (0, 0)
    ys = range(0, max(h - size, 0) + 1, step)
    xs = range(0, max(w - size, 0) + 1, step)
    cy, cx = boxes.centres[:, 0], boxes.centres[:, 1]
    for y in ys:
        inside_y = (cy >= y) & (cy < y + size)
        for x in xs:
            n = int(np.sum(inside_y & (cx >= x) & (cx < x + size)))
            if n > best:
                best, corner = n, (y, x)
    return corner


class WindowDataset(Dataset):
    """Validation: from each image, the ``size`` px window with the most particles, at its own scale,
    with its density target (fixed, so that every epoch is scored on the same pixels)."""

    def __init__(self, samples: list[Sample], params: dict):
        size = params["val_crop"]
        self.names, self.items = [], []
        for sample in samples:
            h, w = sample.image.shape
            n = min(size, h, w) // 2 ** params["depth"] * 2 ** params["depth"]
            y0, x0 = densest_window(sample.boxes, (h, w), n)
            image = sample.image[y0 : y0 + n, x0 : x0 + n]
            centres = sample.boxes.centres - [y0, x0]
            target = render_density((n, n), centres, blob_sigmas(sample.boxes.sizes, params))
            self.names.append(sample.name)
            self.items.append((torch.from_numpy(image[None].copy()), torch.from_numpy(target[None])))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def make_synthetic(out_dir: Path, *, n: int = 8, size: int = 96, seed: int = 0) -> Path:
    """``n`` tiny STEM-like images: bright round particles (radius 2-4 px) on a dark, noisy support,
    with YOLO labels."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        image = 30 + 20 * np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 2.5) ** 2))
        lines = []
        for _ in range(int(rng.integers(6, 14))):
            r = rng.uniform(2, 4)
            cy, cx = rng.uniform(r, size - r, 2)
            image = image + 150 * (np.hypot(yy - cy, xx - cx) <= r)
            lines.append(f"0 {cx / size:.6f} {cy / size:.6f} {2 * r / size:.6f} {2 * r / size:.6f}")
        image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(out_dir / "images" / f"synth{i}.png")
        (out_dir / "labels" / f"synth{i}.txt").write_text("\n".join(lines) + "\n")
    return out_dir
