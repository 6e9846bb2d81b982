"""Noise2Void on any folder of noisy images: ``--data`` without the layout of :mod:`.data`.

Every image emzoo reads under the folder is used (2D images; colour averaged to grey; up to
:data:`MAX_SLICES` evenly spaced slices of a volume), each normalised on its own, until
:data:`MAX_PIXELS` pixels. The bottom strip of every image (``val_fraction`` of its rows, at least
``2 * 2**depth``) is held out: its fixed blind-spot pieces validate, so that one image is enough and
no split is asked of the user. Files emzoo wrote and everything inside an emzoo run folder are left
out. Without clean images the package is evaluated on the same strips by the Noise2Void loss
(:func:`evaluate`), next to non-local means and the noisy input.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.errors import InputError, literal
from emzoo.packaging.info import PredictFn

from . import baseline, data

log = logging.getLogger(__name__)
MAX_SLICES = 16  # slices used of one volume, evenly spaced
MAX_PIXELS = 2**28  # pixels held in memory for training (1 GiB of float32); further images are left out
MAX_VAL_PIECES = 24  # validation pieces over all strips, evenly chosen
MAX_EVAL_IMAGES = 8  # images whose strips the package is evaluated on
CONTEXT = 64  # rows above a strip that the evaluation predicts with it (more than the model's halo)
NLM_FACTOR = 0.8  # h = 0.8 x the estimated noise sigma (scikit-image's suggestion)
MASKED_MSE_LONG = (
    "Noise2Void loss: mean squared difference between the prediction and the hidden noisy value at the "
    "blind-spot pixels of the held-out strips, in units of the image's variance; lower is better (it is "
    "the error against the unknown clean image plus the noise variance, the same for every method)"
)


@dataclass(frozen=True)
class Plane:
    """One 2D training image: a file, or one slice of a volume."""

    name: str  # relative to the data folder; a volume's slice as "stack.mrc[z 5]"
    path: Path
    index: tuple[int, ...] | None  # the slice: its index along the volume's axes other than c, y, x
    shape: tuple[int, int]  # (rows, columns)


def applies(data_dir: Path) -> bool:
    """Is ``data_dir`` a plain folder of images (not the shared layout of :mod:`.data`)?"""
    base = data.root(data_dir)
    return not (base / data.TEM_DIR).is_dir() and not (base / data.CRYO_DIR).is_dir()


def _in_run_folder(path: Path, base: Path) -> bool:
    """Is ``path`` inside an emzoo run folder (its samples and plots are no training images)?"""
    for folder in path.parents:
        if (folder / "config.json").is_file() and (folder / "weights").is_dir():
            return True
        if folder == base:
            break
    return False


def planes(data_dir: Path) -> list[Plane]:
    """The training images under ``data_dir``, in a stable order (see the module docstring)."""
    from emzoo.io import expand_inputs, read_image
    from emzoo.io.write import written_by_emzoo

    base = Path(data_dir)
    found, pixels = [], 0
    for item in expand_inputs([base]):
        if written_by_emzoo(item.path) or _in_run_folder(item.path, base):
            continue
        image = read_image(item.path)
        axes, shape = image.meta.axes, image.shape
        if "y" not in axes or "x" not in axes:
            raise InputError(f"{literal(item.path)}: axes {axes!r}, not an image with y and x")
        size = (shape[axes.index("y")], shape[axes.index("x")])
        others = [(i, n) for i, (a, n) in enumerate(zip(axes, shape, strict=True)) if a not in "cyx"]
        if len(others) > 1:
            raise InputError(
                f"{literal(item.path)}: axes {axes!r}: a 2D denoiser takes images and the slices of volumes"
            )
        if others:
            n = others[0][1]
            picks = sorted({round(k) for k in np.linspace(0, n - 1, min(n, MAX_SLICES))})
            letter = axes[others[0][0]]
            new = [Plane(f"{item.relative}[{letter} {k}]", item.path, (k,), size) for k in picks]
        else:
            new = [Plane(str(item.relative), item.path, None, size)]
        for plane in new:
            if pixels + size[0] * size[1] > MAX_PIXELS and found:
                log.warning(
                    "%s: training on the first %d images (%d px); the others are left out",
                    base,
                    len(found),
                    pixels,
                )
                return found
            found.append(plane)
            pixels += size[0] * size[1]
    return found


def read_plane(plane: Plane) -> np.ndarray:
    """The image ``(y, x)`` in its own dtype (colour averaged)."""
    from emzoo.io import read_image

    image = read_image(plane.path)
    axes = image.meta.axes
    index = iter(plane.index or ())
    cut = tuple(next(index) if a not in "cyx" else slice(None) for a in axes)
    arr = np.asarray(image.data[cut])
    kept = "".join(a for a in axes if a in "cyx")
    if "c" in kept:
        arr = arr.mean(axis=kept.index("c"))
        kept = kept.replace("c", "")
    return arr if kept == "yx" else arr.T


def held_rows(plane: Plane, params: dict[str, Any]) -> int:
    """The rows of ``plane``'s validation strip (its bottom); the rows above must hold a training piece."""
    multiple = 2 ** params["depth"]
    h, w = plane.shape
    held = max(math.ceil(params["val_fraction"] * h), 2 * multiple)
    held = -(-held // multiple) * multiple
    if h - held < params["patch_size"] or w < params["patch_size"]:
        raise InputError(
            f"{plane.name}: {h}x{w} px is too small for training pieces of patch_size {params['patch_size']} "
            f"above a validation strip of {held} rows; lower patch_size (e.g. {{overrides=patch_size=32}})"
        )
    return held


def check(data_dir: Path, params: dict[str, Any] | None = None) -> None:
    found = planes(data_dir)
    if params is not None:
        for plane in found:
            held_rows(plane, params)


def split(data_dir: Path, params: dict[str, Any]) -> dict[str, list[str]]:
    train, val = [], []
    for plane in planes(data_dir):
        h, held = plane.shape[0], held_rows(plane, params)
        train.append(f"{plane.name}[rows 0-{h - held}]")
        val.append(f"{plane.name}[rows {h - held}-{h}]")
    return {"train": train, "val": val, "test": []}


def load(data_dir: Path, params: dict[str, Any]) -> tuple[list[data.Source], list[data.Source]]:
    """Normalised training sources (the rows above each strip) and validation pieces (each strip cut
    into pieces about ``val_crop`` wide, at most :data:`MAX_VAL_PIECES` in all)."""
    train, val = [], []
    for plane in planes(data_dir):
        image = data.normalise(read_plane(plane))
        h, w = image.shape
        top = h - held_rows(plane, params)
        train.append(data.Source(f"{plane.name}[rows 0-{top}]", image, (0, top)))
        n = max(1, round(w / params["val_crop"]))
        width = w // n
        for j in range(n):
            piece = image[top:, j * width : (j + 1) * width]
            val.append(
                data.Source(
                    f"{plane.name}[rows {top}-{h}, x {j * width}-{(j + 1) * width}]", piece, (0, h - top)
                )
            )
    if len(val) > MAX_VAL_PIECES:
        val = [val[round(k)] for k in np.linspace(0, len(val) - 1, MAX_VAL_PIECES)]
    return train, val


def sample_input(data_dir: Path) -> np.ndarray:
    """A corner of the first image (its bottom left, with part of the validation strip)."""
    image = read_plane(planes(data_dir)[0])
    return np.ascontiguousarray(image[-256:, :256])[None]


def evaluate(predict: PredictFn, data_dir: Path, params: dict[str, Any], output_id: str) -> dict[str, Any]:
    """The Noise2Void loss on the held-out strips (fixed blind spots, each predicted with
    :data:`CONTEXT` rows above it) of the packaged model, of non-local means and of the noisy input."""
    samples = []
    for k, plane in enumerate(planes(data_dir)[:MAX_EVAL_IMAGES]):
        raw = read_plane(plane)
        held = held_rows(plane, params)
        std = float(np.asarray(raw, np.float64).std()) + data.EPS
        crop = np.array(raw[max(0, raw.shape[0] - held - CONTEXT) :], np.float32)
        rng = np.random.default_rng([params["seed"], 104729, k])
        strip, mask = data.blind_spot(
            crop[-held:], params["mask_fraction"], params["mask_radius"], rng, **data.masking(params)
        )
        hidden = crop[-held:][mask > 0].astype(np.float64)
        crop[-held:] = strip

        def loss(
            out: np.ndarray, hidden: np.ndarray = hidden, mask: np.ndarray = mask, std: float = std
        ) -> float:
            values = np.asarray(out, np.float64)[-mask.shape[0] :][mask > 0]
            return float(np.mean(((values - hidden) / std) ** 2))

        out = np.asarray(predict(crop[None])[output_id])[0]
        samples.append(
            {
                "name": plane.name,
                "model": loss(out),
                "nlm": loss(baseline.nlm(crop, NLM_FACTOR)),
                "noisy": loss(crop),
            }
        )

    def mean(method: str) -> dict[str, float]:
        return {"masked_mse": float(np.mean([s[method] for s in samples]))}

    table = ["| image | this model | non-local means | noisy input |", "|---|---|---|---|"]
    table += [f"| {s['name']} | {s['model']:.4f} | {s['nlm']:.4f} | {s['noisy']:.4f} |" for s in samples]
    return {
        "dataset_role": "validation",
        "dataset_name": f"held-out bottom strips of the {len(samples)} training image(s)",
        "sample_count": len(samples),
        "metrics": mean("model"),
        "metrics_long": {"masked_mse": MASKED_MSE_LONG},
        "baseline": {"name": baseline.NLM_NAME.format(k=NLM_FACTOR), "metrics": mean("nlm")},
        "other_baselines": {"noisy input (no denoising)": mean("noisy")},
        "table": "\n".join(table),
        "samples": [
            {"name": s["name"], **{m: {"masked_mse": s[m]} for m in ("model", "nlm", "noisy")}}
            for s in samples
        ],
    }
