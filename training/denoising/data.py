"""Noisy EM for Noise2Void: where the images are, the split, the input tensor and the training
normalisation, blind-spot masking, the training and validation datasets, the SEM evaluation images
and tiny synthetic data.

The zoo model's ``--data`` is the folder that holds ``noisy_tem/`` (TEM tiles, TIFF),
``cryoem_micrographs/`` (``*.mrc``, 2D) and ``sem_denoising/`` (the clean ``BSE.jpg`` and its noisy
versions); training cuts its pieces from the noisy images of all three (the noisy SEM images too,
without their bottom strips, when ``sem_fraction`` > 0: self-supervised training never sees the
clean ``BSE.jpg``), evaluation compares the SEM results with the clean image. Any other folder is a
plain folder of noisy images (:mod:`.folder`).
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
    if params["sem_fraction"] > 0:
        for name in test:
            height = _height(root(data_dir) / name)
            top = height - sem_held_rows(height, params)
            train.append(f"{name}[rows 0-{top}]")
            val.append(f"{name}[rows {top}-{height}]")
    return {"train": train, "val": val, "test": test}


def sem_held_rows(height: int, params: dict) -> int:
    """Rows at the bottom of a noisy SEM image held out for validation: ``val_fraction`` of them, at
    least two network strides."""
    return max(round(height * params["val_fraction"]), 2 * 2 ** params["depth"])


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


def load(data_dir: Path, params: dict) -> tuple[dict[str, list[Source]], list[Source]]:
    """Normalised training sources per pool (``tem``, ``cryo``, ``sem``) and validation sources, as
    the split says."""
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
    train_sem = []
    if params["sem_fraction"] > 0:
        for names in sem_files(base).values():
            for name in names:
                image = normalise(read(base / name))
                h = image.shape[0]
                top = h - sem_held_rows(h, params)
                train_sem.append(Source(f"{name}[rows 0-{top}]", image, (0, top)))
                val.append(Source(f"{name}[rows {top}-{h}]", image, (top, h)))
    return {"tem": train_tem, "cryo": train_cryo, "sem": train_sem}, val


STRUCTURES = ("none", "x", "y", "xy", "block")  # structured blind spots (mask_structure)


def structure_offsets(structure: str, span: int) -> np.ndarray:
    """The ``(dy, dx)`` offsets around a hidden pixel that a structured blind spot hides too: along x
    (noise correlated along rows: scan lines), along y, both (a cross) or a ``(2 span + 1)``-square
    block (noise correlated in every direction, e.g. interpolated frames); never ``(0, 0)``.

    >>> structure_offsets("x", 2).tolist()
    [[0, -2], [0, -1], [0, 1], [0, 2]]
    >>> len(structure_offsets("block", 1)), len(structure_offsets("none", 3))
    (8, 0)
    """
    r = np.arange(-span, span + 1)
    line = r[r != 0]
    zeros = np.zeros_like(line)
    offsets = {
        "none": np.zeros((0, 2), int),
        "x": np.stack([zeros, line], 1),
        "y": np.stack([line, zeros], 1),
        "xy": np.concatenate([np.stack([zeros, line], 1), np.stack([line, zeros], 1)]),
        "block": np.array([(dy, dx) for dy in r for dx in r if dy or dx], int).reshape(-1, 2),
    }
    return offsets[structure]


def blind_spot(
    patch: np.ndarray,
    fraction: float,
    radius: int,
    rng: np.random.Generator,
    *,
    structure: str = "none",
    span: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Noise2Void masking of a 2D patch: about ``fraction`` of its pixels (at least one) are replaced by
    a random other pixel within ``radius`` (never themselves); returns the masked patch and the mask.

    With a ``structure`` (structN2V, Broaddus et al. 2020), for noise correlated between neighbouring
    pixels: the pixels at :func:`structure_offsets` around each hidden pixel are replaced too, and the
    hidden pixel itself, by values of random pixels anywhere in the patch, so that no neighbour whose
    noise is correlated with the hidden pixel's is left for the network to copy. The mask (the loss's
    pixels) stays the hidden pixels only."""
    h, w = patch.shape
    n = max(1, round(fraction * h * w))
    flat = rng.choice(h * w, size=n, replace=False)
    ys, xs = flat // w, flat % w
    masked = patch.copy()
    offsets = structure_offsets(structure, span) if structure != "none" else None
    if offsets is None:
        dy = rng.integers(-radius, radius + 1, n)
        dx = rng.integers(-radius, radius + 1, n)
        same = (dy == 0) & (dx == 0)
        dx[same] = rng.choice([-1, 1], int(same.sum()))  # never the pixel itself
        sy = np.abs(ys + dy)  # mirror at the borders
        sy = np.where(sy >= h, 2 * (h - 1) - sy, sy)
        sx = np.abs(xs + dx)
        sx = np.where(sx >= w, 2 * (w - 1) - sx, sx)
        masked[ys, xs] = patch[sy, sx]
    else:
        oy = np.concatenate([ys, (ys[:, None] + offsets[:, 0]).ravel()])
        ox = np.concatenate([xs, (xs[:, None] + offsets[:, 1]).ravel()])
        inside = (oy >= 0) & (oy < h) & (ox >= 0) & (ox < w)
        oy, ox = oy[inside], ox[inside]
        masked[oy, ox] = patch.ravel()[rng.integers(0, h * w, len(oy))]
    mask = np.zeros_like(patch)
    mask[ys, xs] = 1
    return masked, mask


def masking(params: dict) -> dict:
    """The structured-mask keywords of :func:`blind_spot` from the run's parameters (runs made before
    the option existed: none)."""
    return {"structure": params.get("mask_structure", "none"), "span": int(params.get("mask_span", 0))}


def _crop(source: Source, size: int, rng: np.random.Generator) -> np.ndarray:
    top, bottom = source.rows
    w = source.image.shape[1]
    y = int(rng.integers(top, bottom - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return source.image[y : y + size, x : x + size]


def pool_weights(pools: dict[str, list[Source]], params: dict) -> dict[str, float]:
    """How often each non-empty pool gives a piece: ``cryo`` ``cryoem_fraction``, ``sem``
    ``sem_fraction``, ``tem`` (or a plain folder's images) the rest; renormalised over the pools that
    have images.

    >>> w = pool_weights({"tem": [1], "cryo": [], "sem": [2]}, {"cryoem_fraction": 0.3, "sem_fraction": 0.3})
    >>> {k: round(v, 3) for k, v in w.items()}  # no micrographs: TEM 0.4 and SEM 0.3 renormalised
    {'tem': 0.571, 'sem': 0.429}
    """
    share = {"cryo": params["cryoem_fraction"], "sem": params["sem_fraction"]}
    raw = {k: share.get(k, max(1.0 - sum(share.values()), 0.0)) for k, v in pools.items() if v}
    total = sum(raw.values())
    if total <= 0:  # every non-empty pool has weight 0: draw from them alike
        return {k: 1 / len(raw) for k in raw}
    return {k: w / total for k, w in raw.items()}


class BlindSpotDataset(Dataset):
    """Random N2V training pieces: a source of a pool drawn by :func:`pool_weights` (TEM tiles,
    micrographs' training rows, noisy SEM images' training rows, or a plain folder's images), a
    random crop with flips, 90-degree rotations and intensity jitter, then masking. Items are
    ``(masked piece (1, P, P), [piece, mask] (2, P, P))``; sample ``i`` of epoch ``e`` comes from
    ``default_rng([seed, e, i])``."""

    def __init__(self, pools: dict[str, list[Source]], params: dict, *, length: int, seed: int = 0):
        if not any(pools.values()):
            raise InputError("no training images for the denoiser")
        self.p = params
        self.weights = pool_weights(pools, params)
        self.pools = [pools[k] for k in self.weights]
        self.length, self.seed, self.epoch = length, seed, 0
        self.names = [s.name for sources in pools.values() for s in sources]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        p = self.p
        pool = self.pools[int(rng.choice(len(self.pools), p=list(self.weights.values())))]
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
        masked, mask = blind_spot(patch, p["mask_fraction"], p["mask_radius"], rng, **masking(p))
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
                    patch,
                    params["mask_fraction"],
                    params["mask_radius"],
                    np.random.default_rng(seed),
                    **masking(params),
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
