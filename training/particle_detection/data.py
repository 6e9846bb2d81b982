"""Targets, training crops, validation windows and tiny synthetic data of the particle detector.

The folder layout, the YOLO boxes, the split by image and the input normalisation are those of the
``particle_counting`` use case (its ``data`` module, imported here): both use cases train, validate and
test on the same images. A target is three maps: the centre heat map (a Gaussian of peak 1 per
particle, at its centre pixel, width from its size; particles combined by their maximum), the
diameter (px) of the particle that dominates each pixel, and the diameter at each centre pixel
(0 elsewhere: the true centres for validation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .shared import counting_data

pc = counting_data()
Boxes = pc.Boxes


def sigmas(sizes: np.ndarray, params: dict) -> np.ndarray:
    """Width (Gaussian sigma, px) of each particle's peak: ``sigma_factor`` x its size, clipped."""
    return np.clip(
        params["sigma_factor"] * np.asarray(sizes, float), params["sigma_min"], params["sigma_max"]
    )


def render_targets(
    shape: tuple[int, int], centres: np.ndarray, sizes: np.ndarray, params: dict
) -> np.ndarray:
    """``(3, y, x)`` float32: heat map, diameter map, diameter at the centre pixels (see the module)."""
    h, w = shape
    heat = np.zeros(shape, np.float32)
    diameter = np.zeros(shape, np.float32)
    at_centre = np.zeros(shape, np.float32)
    for (cy, cx), size, s in zip(
        np.asarray(centres, float), np.asarray(sizes, float), sigmas(sizes, params), strict=True
    ):
        iy, ix = round(cy), round(cx)
        r = int(np.ceil(3 * s))
        y0, y1, x0, x1 = max(iy - r, 0), min(iy + r + 1, h), max(ix - r, 0), min(ix + r + 1, w)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        g = np.exp(-((yy - iy) ** 2 + (xx - ix) ** 2) / (2 * s * s)).astype(np.float32)
        window = heat[y0:y1, x0:x1]
        wins = g > window
        diameter[y0:y1, x0:x1][wins] = size
        np.maximum(window, g, out=window)
        if 0 <= iy < h and 0 <= ix < w:
            at_centre[iy, ix] = size
    return np.stack([heat, diameter, at_centre])


def truth_of(target: np.ndarray):
    """The true particles of a target (its third map) as :class:`emzoo.tasks.detection.Particles`."""
    from emzoo.tasks.detection import Particles

    centres = np.argwhere(target[2] > 0).astype(float)
    d = target[2][target[2] > 0].astype(float)
    return Particles(centres, sizes=np.stack([d, d], axis=1))


def resize(window: np.ndarray, size: int) -> np.ndarray:
    from skimage.transform import resize as sk_resize

    if window.shape == (size, size):
        return window.astype(np.float32)
    return sk_resize(
        window, (size, size), order=1, anti_aliasing=window.shape[0] > size, preserve_range=True
    ).astype(np.float32)


class CropDataset(Dataset):
    """Random training crops: a window of ``crop / s`` px (``s`` log-uniform in ``scale_min`` ..
    ``scale_max``, narrowed so that the image's median particle stays ``size_min_px`` .. ``size_max_px``
    wide; with probability ``particle_focus`` around a random particle) resized to ``crop`` px, with
    its targets drawn at that scale; then flips, 90-degree rotations, contrast inversion (bright field
    <-> HAADF) and brightness/contrast jitter. Sample ``i`` of epoch ``e`` is drawn with
    ``default_rng([seed, e, i])``."""

    def __init__(self, samples: list, params: dict, *, length: int, seed: int = 0):
        self.samples, self.p, self.length, self.seed, self.epoch = samples, params, length, seed, 0
        self.names = [s.name for s in samples]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        p, crop = self.p, self.p["crop_size"]
        sample = self.samples[int(rng.integers(len(self.samples)))]
        h, w = sample.image.shape
        median = float(np.median(sample.boxes.sizes)) if len(sample.boxes) else 20.0
        lo = max(p["scale_min"], p["size_min_px"] / median)
        hi = max(min(p["scale_max"], p["size_max_px"] / median), lo)
        s = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        win = max(min(round(crop / s), h, w), 8)
        s = crop / win
        if len(sample.boxes) and rng.random() < p["particle_focus"]:
            cy, cx = sample.boxes.centres[int(rng.integers(len(sample.boxes)))]
            y0 = int(np.clip(cy - rng.uniform(0, win), 0, h - win))
            x0 = int(np.clip(cx - rng.uniform(0, win), 0, w - win))
        else:
            y0, x0 = int(rng.integers(0, h - win + 1)), int(rng.integers(0, w - win + 1))
        image = resize(sample.image[y0 : y0 + win, x0 : x0 + win], crop)
        centres = (sample.boxes.centres - [y0, x0]) * s
        target = render_targets((crop, crop), centres, sample.boxes.sizes * s, p)
        image = image[None]
        if p["flips"]:
            for axis in (1, 2):
                if rng.random() < 0.5:
                    image, target = np.flip(image, axis), np.flip(target, axis)
        if p["rotations"]:
            k = int(rng.integers(4))
            image, target = np.rot90(image, k, axes=(1, 2)), np.rot90(target, k, axes=(1, 2))
        if rng.random() < p["invert_probability"]:
            image = 1.0 - image
        jitter = p["intensity_jitter"]
        if jitter > 0:
            image = image * (1 + rng.uniform(-jitter, jitter)) + rng.uniform(-jitter, jitter)
        return np.ascontiguousarray(image, np.float32), np.ascontiguousarray(target, np.float32)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.draw(np.random.default_rng([self.seed, self.epoch, i]))
        return torch.from_numpy(image), torch.from_numpy(target)


class WindowDataset(Dataset):
    """Validation: from each image, the ``val_crop`` px window (a multiple of ``2 ** depth``) with the
    most particles, at its own scale, with its targets (the same pixels every epoch)."""

    def __init__(self, samples: list, params: dict):
        self.names, self.items = [], []
        step = 2 ** params["depth"]
        for sample in samples:
            h, w = sample.image.shape
            n = min(params["val_crop"], h, w) // step * step
            y0, x0 = pc.densest_window(sample.boxes, (h, w), n)
            image = sample.image[y0 : y0 + n, x0 : x0 + n]
            target = render_targets((n, n), sample.boxes.centres - [y0, x0], sample.boxes.sizes, params)
            self.names.append(sample.name)
            self.items.append((torch.from_numpy(image[None].copy()), torch.from_numpy(target)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def make_synthetic(out_dir: Path, *, n: int = 8, size: int = 128, seed: int = 0) -> Path:
    """``n`` tiny STEM-like images with YOLO labels: round particles of 6-22 px diameter, bright on a
    dark support (HAADF) in even images, dark on a bright support (bright field) in odd ones."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        image = 40 + 25 * np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 2.5) ** 2))
        lines, placed = [], []
        for _ in range(60):
            if len(placed) >= 8:
                break
            r = rng.uniform(3, 11)
            cy, cx = rng.uniform(r + 1, size - r - 1, 2)
            if any(np.hypot(cy - y, cx - x) < r + q + 2 for y, x, q in placed):
                continue
            placed.append((cy, cx, r))
            image = image + 140 * (np.hypot(yy - cy, xx - cx) <= r)
            lines.append(
                f"0 {(cx + 0.5) / size:.6f} {(cy + 0.5) / size:.6f} {2 * r / size:.6f} {2 * r / size:.6f}"
            )
        image = np.clip(image + rng.normal(0, 10, image.shape), 0, 255)
        if i % 2:
            image = 255 - image
        Image.fromarray(image.astype(np.uint8)).save(out_dir / "images" / f"synth{i}.png")
        (out_dir / "labels" / f"synth{i}.txt").write_text("\n".join(lines) + "\n")
    return out_dir
