"""Noisy EM for Noise2Void: where the images are, the split, the input tensor and the training
normalisation, blind-spot masking, the training and validation datasets, the SEM evaluation images
and tiny synthetic data.

The zoo model's ``--data`` is the folder that holds ``noisy_tem/`` (TEM tiles, TIFF),
``cryoem_micrographs/`` (``*.mrc``, 2D) and ``sem_denoising/`` (the clean ``BSE.jpg`` and its noisy
versions); training uses only the first two, evaluation only the last. Any other folder is a plain
folder of noisy images (:mod:`.folder`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from emzoo.errors import InputError
from emzoo.packaging.info import TensorInfo
from emzoo.train.split import natural_key

from .pairs import pair_code

log = logging.getLogger(__name__)
EPS = 1e-6  # of the normalisation, in training (normalise) and inside the packaged network alike

# The package's input: grey levels as they are (float32). The packaged network (network.py) normalises
# each image itself, as training does (normalise), and returns grey levels.
RAW = TensorInfo(
    id="raw",
    axes="cyx",
    channel_names=("raw",),
    description="noisy EM image, one grey channel (uint8, uint16 or float), in its own grey levels",
    processing=({"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},),
)
TEM_DIR, CRYO_DIR, SEM_DIR = "noisy_tem", "cryoem_micrographs", "sem_denoising"
TIF_SUFFIXES = (".tif", ".tiff")
MOSAIC = re.compile(r"^(\d+)_(\d+)$")  # row_col.tif tiles of a mosaic
CLEAN = "BSE.jpg"
LEVELS = (25, 50, 75, 100)  # sigma of the added Gaussian noise (grey levels of 255)
TUNING_DRAW = "25_sigma/BSE_25sigma_noisy_2.jpg"  # chooses the NLM strength; not scored
VAL_MASKED_PIXELS = 10_000  # hidden validation pixels to aim for (the zoo's data have about 10 000)
MAX_VAL_MASKS = 16


@dataclass
class Source:
    """One normalised training image and the rows of it that training may use."""

    name: str  # relative to the data folder, with the row range for micrographs
    image: np.ndarray  # (y, x) float32, zero mean, unit variance over the whole file
    rows: tuple[int, int]  # training/validation rows [start, stop)


def root(data_dir: Path) -> Path:
    data_dir = Path(data_dir)
    if data_dir.name in (TEM_DIR, CRYO_DIR) and (data_dir.parent / SEM_DIR).is_dir():
        return data_dir.parent  # --data pointing at one of the training sub-folders
    return data_dir


def tem_files(data_dir: Path) -> list[str]:
    base = root(data_dir) / TEM_DIR
    if not base.is_dir():
        return []
    found = [p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in TIF_SUFFIXES]
    return sorted((str(p.relative_to(root(data_dir))) for p in found), key=natural_key)


def micrographs(data_dir: Path) -> list[str]:
    base = root(data_dir) / CRYO_DIR
    if not base.is_dir():
        return []
    return sorted(str(p.relative_to(root(data_dir))) for p in base.glob("*.mrc") if p.is_file())


def neighbour_correlation(image, size: int = 1024) -> float:
    """Correlation of neighbouring pixels (mean of the x and y lag-1 autocorrelation) in a central crop.
    A cryo-EM micrograph is almost pure noise at the pixel scale, so this measures how correlated its
    *noise* is: about 0 for counted, unbinned frames; 0.5 and more after interpolation (binning,
    drift correction), which Noise2Void cannot remove and would learn to reproduce."""
    h, w = image.shape[-2:]
    y0, x0 = max((h - size) // 2, 0), max((w - size) // 2, 0)
    a = np.asarray(image[..., y0 : y0 + size, x0 : x0 + size], np.float64)
    a = a - a.mean()
    var = float((a * a).mean())
    if var == 0:
        return 0.0
    return float(((a[:, 1:] * a[:, :-1]).mean() + (a[1:] * a[:-1]).mean()) / (2 * var))


def usable_micrographs(data_dir: Path, params: dict) -> tuple[list[str], dict[str, float]]:
    """The micrographs whose noise is independent enough for Noise2Void (neighbour correlation at most
    ``max_noise_correlation``), and the others with their correlation (left out of training)."""
    from emzoo.io import read_image

    kept, left_out = [], {}
    for name in micrographs(data_dir):
        corr = neighbour_correlation(read_image(root(data_dir) / name).data)
        if corr <= params["max_noise_correlation"]:
            kept.append(name)
        else:
            left_out[name] = round(corr, 3)
    return kept, left_out


def sem_files(data_dir: Path) -> dict[str, list[str]]:
    """Noisy SEM images per noise level (``{25: [...], 50: [...], ...}``), relative names, without the
    tuning draw and without byte-identical duplicates (the top-level sigma-25 image is also one of
    the ten draws)."""
    base = root(data_dir) / SEM_DIR
    out: dict[str, list[str]] = {}
    seen: set[bytes] = set()
    for level in LEVELS:
        names = [f"BSE_{level}sigma_noisy.jpg"]
        if (base / f"{level}_sigma").is_dir():
            names += sorted(
                (f"{level}_sigma/{p.name}" for p in (base / f"{level}_sigma").glob("*.jpg")), key=natural_key
            )
        kept = []
        for name in names:
            path = base / name
            if not path.is_file() or name == TUNING_DRAW:
                continue
            digest = path.read_bytes()
            if digest in seen:
                continue
            seen.add(digest)
            kept.append(f"{SEM_DIR}/{name}")
        if kept:
            out[str(level)] = kept
    return out


def read(path: Path) -> np.ndarray:
    """A 2D image in its own dtype (memory-mapped MRC is read whole here)."""
    from emzoo.io import read_image

    image = read_image(path)
    a = np.asarray(image.data)
    axes = image.meta.axes
    if "c" in axes:
        a = a.mean(axis=axes.index("c"))
    if a.ndim != 2:
        raise InputError(f"{path}: expected a 2D image, found shape {a.shape} (axes {axes})")
    return a


def normalise(image: np.ndarray) -> np.ndarray:
    """One raw image as the network sees it: ``(x - mean) / (std + 1e-6)`` over the whole image, in
    float32 (what the packaged network does to each image it is given, :mod:`.network`)."""
    x = np.asarray(image, np.float32)
    mean, std = float(x.mean(dtype=np.float64)), float(x.std(dtype=np.float64))
    return ((x - mean) / (std + EPS)).astype(np.float32)


def val_tiles(names: list[str]) -> list[str]:
    """Validation TEM tiles: the last row of every ``row_col.tif`` mosaic (a contiguous strip, so
    that only one boundary touches training tiles); without a mosaic, the last file."""
    by_folder: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        m = MOSAIC.match(Path(name).stem)
        if m:
            by_folder.setdefault(str(Path(name).parent), []).append((int(m.group(1)), name))
    picked = []
    for tiles in by_folder.values():
        last = max(r for r, _ in tiles)
        picked += [n for r, n in tiles if r == last]
    return picked or names[-1:]


def split(data_dir: Path, params: dict) -> dict[str, list[str]]:
    tem = tem_files(data_dir)
    val_tem = val_tiles(tem) if len(tem) > 1 else []
    train = [n for n in tem if n not in val_tem]
    val = list(val_tem)
    held = int(params["val_rows"])
    for name in usable_micrographs(data_dir, params)[0]:
        height = _height(root(data_dir) / name)
        train.append(f"{name}[rows 0-{height - held}]")
        val.append(f"{name}[rows {height - held}-{height}]")
    test = [n for level in sem_files(data_dir).values() for n in level]
    return {"train": train, "val": val, "test": test}


def _height(path: Path) -> int:
    from emzoo.io import read_image

    return int(read_image(path).shape[-2])


def check(data_dir: Path, params: dict | None = None) -> None:
    base = root(data_dir)
    if not base.is_dir():
        raise InputError(f"{base}: no such data folder")
    layout = f"'{TEM_DIR}/' (noisy TEM TIFFs) and/or '{CRYO_DIR}/' (*.mrc), and '{SEM_DIR}/' (evaluation)"
    if not tem_files(base) and not micrographs(base):
        found = ", ".join(sorted(p.name for p in base.iterdir())[:6]) or "nothing"
        raise InputError(f"{base}: no noisy training images (found: {found}); expected {layout}")
    if not (base / SEM_DIR / CLEAN).is_file():
        raise InputError(
            f"{base / SEM_DIR}: no clean reference {CLEAN}; the evaluation needs it with "
            f"BSE_<sigma>sigma_noisy.jpg beside it ({layout})"
        )
    if not sem_files(base):
        raise InputError(f"{base / SEM_DIR}: no noisy images BSE_<sigma>sigma_noisy.jpg to evaluate on")
    for name in micrographs(base):
        shape = _shape(base / name)
        if len(shape) != 2:
            raise InputError(f"{base / name}: expected a 2D micrograph, found shape {shape}")
        if params and shape[0] <= 2 * params["val_rows"]:
            raise InputError(
                f"{base / name}: {shape[0]} rows, too few to hold out val_rows={params['val_rows']}"
            )


def _shape(path: Path) -> tuple[int, ...]:
    from emzoo.io import read_image

    return tuple(read_image(path).shape)


def load(data_dir: Path, params: dict) -> tuple[list[Source], list[Source], list[Source]]:
    """Normalised training sources (TEM, cryo-EM) and validation sources, as the split says."""
    base = root(data_dir)
    tem = tem_files(base)
    val_names = set(val_tiles(tem)) if len(tem) > 1 else set()
    train_tem, val = [], []
    for name in tem:
        image = normalise(read(base / name))
        source = Source(name, image, (0, image.shape[0]))
        (val if name in val_names else train_tem).append(source)
    train_cryo = []
    held = int(params["val_rows"])
    kept, left_out = usable_micrographs(base, params)
    for name, corr in left_out.items():
        log.warning(
            "%s is left out: its noise is correlated between neighbouring pixels (%.2f > "
            "max_noise_correlation %.2f), which Noise2Void cannot remove",
            name,
            corr,
            params["max_noise_correlation"],
        )
    for name in kept:
        image = normalise(read(base / name))
        h = image.shape[0]
        train_cryo.append(Source(f"{name}[rows 0-{h - held}]", image, (0, h - held)))
        val.append(Source(f"{name}[rows {h - held}-{h}]", image, (h - held, h)))
    return train_tem, train_cryo, val


def blind_spot(
    patch: np.ndarray, fraction: float, radius: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Noise2Void masking of a 2D patch: about ``fraction`` of its pixels (at least one) are replaced by
    a random other pixel within ``radius`` (never themselves); returns the masked patch and the mask."""
    h, w = patch.shape
    n = max(1, round(fraction * h * w))
    flat = rng.choice(h * w, size=n, replace=False)
    ys, xs = flat // w, flat % w
    dy = rng.integers(-radius, radius + 1, n)
    dx = rng.integers(-radius, radius + 1, n)
    same = (dy == 0) & (dx == 0)
    dx[same] = rng.choice([-1, 1], int(same.sum()))  # never the pixel itself
    sy = np.abs(ys + dy)  # mirror at the borders
    sy = np.where(sy >= h, 2 * (h - 1) - sy, sy)
    sx = np.abs(xs + dx)
    sx = np.where(sx >= w, 2 * (w - 1) - sx, sx)
    masked = patch.copy()
    masked[ys, xs] = patch[sy, sx]
    mask = np.zeros_like(patch)
    mask[ys, xs] = 1
    return masked, mask


def _crop(source: Source, size: int, rng: np.random.Generator) -> np.ndarray:
    top, bottom = source.rows
    w = source.image.shape[1]
    y = int(rng.integers(top, bottom - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return source.image[y : y + size, x : x + size]


class BlindSpotDataset(Dataset):
    """Random N2V training pieces: a TEM tile (probability ``1 - cryoem_fraction``) or a micrograph's
    training rows, a random crop with flips, 90-degree rotations and intensity jitter, then masking.
    Items are ``(masked piece (1, P, P), [piece, mask] (2, P, P))``; sample ``i`` of epoch ``e`` comes
    from ``default_rng([seed, e, i])``."""

    def __init__(self, tem: list[Source], cryo: list[Source], params: dict, *, length: int, seed: int = 0):
        if not tem and not cryo:
            raise InputError("no training images for the denoiser")
        self.tem, self.cryo, self.p = tem, cryo, params
        self.length, self.seed, self.epoch = length, seed, 0
        self.names = [s.name for s in tem + cryo]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        p = self.p
        use_cryo = bool(self.cryo) and (not self.tem or rng.random() < p["cryoem_fraction"])
        pool = self.cryo if use_cryo else self.tem
        patch = _crop(pool[int(rng.integers(len(pool)))], p["patch_size"], rng)
        if p["flips"]:
            if rng.random() < 0.5:
                patch = patch[::-1]
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
        if p["rotations"]:
            patch = np.rot90(patch, int(rng.integers(4)))
        patch = np.ascontiguousarray(patch, np.float32)
        jitter = p["intensity_jitter"]
        if jitter > 0:  # input and target alike: a change of contrast the network should follow
            patch = (patch * (1 + rng.uniform(-jitter, jitter)) + rng.uniform(-jitter, jitter)).astype(
                np.float32
            )
        if p["method"] == "ne2ne":  # the whole noisy piece: the network draws its sub-images (pairs.py)
            return patch[None], np.stack([patch, np.zeros_like(patch)])
        masked, mask = blind_spot(patch, p["mask_fraction"], p["mask_radius"], rng)
        return masked[None], np.stack([patch, mask])

    def __getitem__(self, i: int):
        x, y = self.draw(np.random.default_rng([self.seed, self.epoch, i]))
        return torch.from_numpy(x), torch.from_numpy(y)


def val_masks(pixels: int, fraction: float) -> int:
    """How many blind-spot masks each validation piece gets: enough for about
    :data:`VAL_MASKED_PIXELS` hidden pixels in all (one for the zoo's data; several for the strip of
    a single image, so that the best epoch is not chosen by chance), at most :data:`MAX_VAL_MASKS`."""
    return int(min(MAX_VAL_MASKS, max(1, np.ceil(VAL_MASKED_PIXELS / max(pixels * fraction, 1)))))


class ValidationDataset(Dataset):
    """Fixed masked pieces of the validation tiles and micrograph strips (same masks every epoch): the
    N2V loss on pixels the network never trained on; each piece with :func:`val_masks` masks. For
    Neighbor2Neighbor, fixed pairs instead (:func:`~.pairs.pair_code`): the loss of ``f(g1)`` against
    ``g2`` (a blind-spot loss would penalise a network that is not blind for seeing its pixel)."""

    def __init__(self, sources: list[Source], params: dict):
        size = params["val_crop"]
        pairs = params["method"] == "ne2ne"  # Neighbor2Neighbor: fixed pairs of half-size sub-images
        multiple = 2 ** (params["depth"] + pairs)
        patches = []
        for source in sources:
            top, bottom = source.rows
            h = min(size, bottom - top) // multiple * multiple
            w = min(size, source.image.shape[1]) // multiple * multiple
            patches.append(np.ascontiguousarray(source.image[top : top + h, :w]))
        # a pair scores one pixel of every 2x2 cell: a quarter of the piece
        n_masks = val_masks(sum(p.size for p in patches), 0.25 if pairs else params["mask_fraction"])
        self.names, self.items = [], []
        for j in range(n_masks):  # all pieces with their first mask first (the sample PNGs)
            for k, (source, patch) in enumerate(zip(sources, patches, strict=True)):
                seed = [params["seed"], 7919, k] + ([j] if j else [])
                self.names.append(source.name.replace("/", "_") + (f"_mask{j}" if j else ""))
                if pairs:
                    self.items.append(pair_code(torch.from_numpy(patch), seed))
                    continue
                masked, mask = blind_spot(
                    patch, params["mask_fraction"], params["mask_radius"], np.random.default_rng(seed)
                )
                self.items.append((torch.from_numpy(masked[None]), torch.from_numpy(np.stack([patch, mask]))))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def make_synthetic(out_dir: Path, *, size: int = 64, seed: int = 0) -> Path:
    """A tiny stand-in for the shared data: a 2x2 mosaic of noisy TEM-like tiles, one small noisy
    uint16 MRC micrograph, and a clean SEM-like image with noisy versions at every level."""
    import mrcfile
    import tifffile
    from PIL import Image
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    yy, xx = np.mgrid[:size, :size]

    def scene(k: int) -> np.ndarray:
        blobs = np.zeros((size, size))
        for _ in range(6):
            cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(4, 12)
            blobs += np.hypot(yy - cy, xx - cx) < r
        return ndimage.gaussian_filter(blobs, 1.5)

    tiles = out_dir / TEM_DIR / "noisy_patches_2x2"
    tiles.mkdir(parents=True, exist_ok=True)
    for r in range(2):
        for c in range(2):
            tile = 30000 + 8000 * scene(r * 2 + c) + rng.normal(0, 3000, (size, size))
            tifffile.imwrite(tiles / f"{r}_{c}.tif", np.clip(tile, 0, 65535).astype(np.uint16))
    (out_dir / CRYO_DIR).mkdir(parents=True, exist_ok=True)
    micrograph = np.clip(rng.poisson(50.0, (2 * size, 2 * size)) * 10 + 2000, 0, 65535).astype(np.uint16)
    with mrcfile.new(out_dir / CRYO_DIR / "tiny.mrc", overwrite=True) as mrc:
        mrc.set_data(micrograph)
        mrc.voxel_size = 0.7
    sem = out_dir / SEM_DIR
    (sem / "25_sigma").mkdir(parents=True, exist_ok=True)
    clean = np.clip(60 + 140 * (scene(9) > 0.5) + 20 * np.sin(xx / 7.0), 0, 255)
    Image.fromarray(clean.astype(np.uint8)).save(sem / CLEAN)
    for level in LEVELS:
        noisy = np.clip(clean + rng.normal(0, level, clean.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(sem / f"BSE_{level}sigma_noisy.jpg")
    for k in (2, 3):
        noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(sem / "25_sigma" / f"BSE_25sigma_noisy_{k}.jpg")
    return out_dir
