"""Self-supervised (Noise2Void) denoising of EM images with the shared 2D U-Net.

Two kinds of ``--data``: the zoo model's shared layout (noisy TEM and cryo-EM for training, the SEM
image with its clean reference for evaluation: :mod:`.data`) and any plain folder of noisy images,
from a single image on (:mod:`.folder`), where it is fine-tuned with ``--init`` or trained from
scratch. The U-Net trains on normalised pieces; the package holds it with the normalisation inside
(:mod:`.network`), so that it takes and returns grey levels.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from emzoo import metrics as M
from emzoo.errors import UsageError
from emzoo.packaging.info import PackagingInfo, PredictFn, TensorInfo
from emzoo.train.usecase import UNetUseCase, register_usecase

from . import baseline, data, folder

HERE = Path(__file__).resolve().parent
OUTPUT_ID = "denoised"
METHODS = ("n2v", "ne2ne")  # Noise2Void, Neighbor2Neighbor
DEFAULT_NLM_FACTOR = 0.8  # scikit-image's suggestion, used when the tuning draw is absent
EMDIFFUSE_URL = "https://github.com/Luchixiang/EMDiffuse"
MRCFILE_URL = "https://github.com/ccpem/mrcfile"
SEM_URL = "https://github.com/bnsreenu/python_for_microscopists"


@register_usecase
class Denoising(UNetUseCase):
    """Noise2Void denoising (trained on noisy TEM and cryo-EM only, no clean images); scored on SEM."""

    name = "denoising"
    params_file = HERE / "params.yaml"
    # the N2V loss on held-out pixels (no clean validation images exist); named masked_mse, not "loss",
    # because the trainer's progress bar cannot show a main metric called "loss" (a keyword clash)
    main_metric = ("masked_mse", "min")
    evaluation_metric = ("psnr_mean", "max")  # the evaluate() metric compared with the baseline
    size_params = ("patch_size", "val_crop")  # multiples of 2**depth
    tiny_params = {  # noqa: RUF012  (class-level constant, never mutated)
        "epochs": 1,
        "iterations_per_epoch": 1,
        "batch_size": 2,
        "patch_size": 32,
        "val_crop": 32,
        "val_rows": 32,
        "depth": 2,
        "features": 4,
        "upsample": "transpose",  # the tiny images (64 px) are below resize's smallest input (68 px)
    }

    # -- data ----------------------------------------------------------------------------------------

    def check_data(self, data_dir: Path) -> None:
        (folder.check if folder.applies(data_dir) else data.check)(data_dir)

    def split(self, data_dir: Path, params: dict[str, Any]) -> dict[str, list[str]]:
        return (folder.split if folder.applies(data_dir) else data.split)(data_dir, params)

    def check_params(self, params: dict[str, Any]) -> None:
        super().check_params(params)  # patch_size and val_crop: multiples of 2**depth
        if not 0 < params["mask_fraction"] <= 0.2:
            raise UsageError(f"mask_fraction must be in (0, 0.2], not {params['mask_fraction']}")
        if params["mask_structure"] not in data.STRUCTURES:
            raise UsageError(
                f"mask_structure must be one of {', '.join(data.STRUCTURES)}, "
                f"not {params['mask_structure']!r}"
            )
        if params["mask_span"] < 1:
            raise UsageError(f"mask_span must be >= 1 px, not {params['mask_span']}")
        if params["mask_radius"] < 1:
            raise UsageError(f"mask_radius must be >= 1 px, not {params['mask_radius']}")
        for name in ("cryoem_fraction", "sem_fraction"):
            if not 0 <= params[name] <= 1:
                raise UsageError(f"{name} must be between 0 and 1, not {params[name]}")
        if params["cryoem_fraction"] + params["sem_fraction"] > 1:
            raise UsageError(
                f"cryoem_fraction + sem_fraction must be at most 1 (the rest are TEM pieces), not "
                f"{params['cryoem_fraction']} + {params['sem_fraction']}"
            )
        if params["intensity_jitter"] < 0:
            raise UsageError(f"intensity_jitter must be >= 0, not {params['intensity_jitter']}")
        if not 0 < params["val_fraction"] < 0.5:
            raise UsageError(f"val_fraction must be in (0, 0.5), not {params['val_fraction']}")
        if params["method"] not in METHODS:
            raise UsageError(f"method must be one of {', '.join(METHODS)}, not {params['method']!r}")
        if params["upsample"] not in ("transpose", "resize"):
            raise UsageError(f"upsample must be transpose or resize, not {params['upsample']!r}")
        if params["ne2ne_gamma"] < 0:
            raise UsageError(f"ne2ne_gamma must be >= 0, not {params['ne2ne_gamma']}")
        multiple = 2 ** (params["depth"] + 1)
        if params["method"] == "ne2ne" and params["patch_size"] % multiple:
            raise UsageError(
                f"patch_size {params['patch_size']} must be a multiple of 2**(depth+1) = {multiple} for "
                "method ne2ne (it trains on half-size sub-images)"
            )

    def datasets(self, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        from emzoo.errors import InputError

        if folder.applies(data_dir):
            folder.check(data_dir, params)
            images, val = folder.load(data_dir, params)
            return {
                "train": data.BlindSpotDataset(
                    {"tem": images},
                    params,
                    length=params["iterations_per_epoch"] * params["batch_size"],
                    seed=params["seed"],
                ),
                "val": data.ValidationDataset(val, params),
                "test": [],
            }
        data.check(data_dir, params)
        pools, val = data.load(data_dir, params)
        size = params["patch_size"]
        train = [s for sources in pools.values() for s in sources]
        small = [s.name for s in train if min(s.rows[1] - s.rows[0], s.image.shape[1]) < size]
        if small:
            raise InputError(f"patch_size {size} is larger than the training image(s) {', '.join(small[:3])}")
        if not val:
            raise InputError(f"{data_dir}: nothing to validate on (needs 2+ TEM tiles or a micrograph)")
        test = [
            (name, data.read(data.root(data_dir) / name)) for name in self.split(data_dir, params)["test"]
        ]
        return {
            "train": data.BlindSpotDataset(
                pools,
                params,
                length=params["iterations_per_epoch"] * params["batch_size"],
                seed=params["seed"],
            ),
            "val": data.ValidationDataset(val, params),
            "test": test,
        }

    def make_tiny_data(self, out_dir: Path) -> Path:
        return data.make_synthetic(Path(out_dir))

    def training_images(self, data_dir: Path, params: dict[str, Any]):
        """Raw training TEM tiles of the largest TEM folder (one detector and dtype), for the packager's
        intensity statistics (pooling uint8, uint16 and cryo-EM counts would describe none of them);
        in a plain folder, all its images."""
        if folder.applies(data_dir):
            yield from (folder.read_plane(p) for p in folder.planes(data_dir))
            return
        base = data.root(data_dir)
        names = [n for n in data.split(data_dir, params)["train"] if n.startswith(data.TEM_DIR)]
        folders = [str(Path(n).parent) for n in names]
        if not folders:
            return
        biggest = max(set(folders), key=folders.count)
        for name in names:
            if str(Path(name).parent) == biggest:
                yield data.read(base / name)

    def sample_input(self, data_dir: Path) -> np.ndarray:
        """A noisy TEM validation tile (never trained on), else a piece of a micrograph's validation rows;
        in a plain folder, a corner of its first image."""
        if folder.applies(data_dir):
            return folder.sample_input(data_dir)
        base = data.root(data_dir)
        tem = data.tem_files(base)
        if len(tem) > 1:
            return data.read(base / data.val_tiles(tem)[0])[None]
        name = data.micrographs(base)[0]
        image = data.read(base / name)
        return np.ascontiguousarray(image[-256:, :256])[None]

    # -- model, loss, metrics ------------------------------------------------------------------------

    def unet_kwargs(self, params: dict[str, Any]) -> dict[str, Any]:
        return {**super().unet_kwargs(params), "upsample": params["upsample"]}

    def build_model(self, params: dict[str, Any]):
        """The U-Net as it trains (:class:`~.pairs.TrainingNet`: Neighbor2Neighbor's pairs if asked)."""
        from .pairs import TrainingNet

        return TrainingNet(**self.unet_kwargs(params), method=params["method"])

    def architecture(self, params: dict[str, Any]) -> tuple[Path, str, dict[str, Any]]:
        return HERE / "network.py", "GreyLevelUNet", self.unet_kwargs(params)

    def package_config(self, params: dict[str, Any]) -> dict[str, Any]:
        """The package asks for test-time augmentation (``tta``: the mean over the 8 flips and turns)."""
        return {"tta": bool(params["tta"])}

    def packaged_model(self, model, params: dict[str, Any]):
        """The trained U-Net inside :class:`~.network.GreyLevelUNet` (the same state dict)."""
        from .network import GreyLevelUNet

        packaged = GreyLevelUNet(**self.unet_kwargs(params))
        packaged.load_state_dict(model.state_dict())
        return packaged

    def loss(self, params: dict[str, Any]):
        from .loss import MaskedMSE, NeighbourLoss

        return NeighbourLoss(params["ne2ne_gamma"]) if params["method"] == "ne2ne" else MaskedMSE()

    def metrics(self, prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """``prediction``: the denoised validation piece (masked input); ``target``: [noisy, mask]; for
        Neighbor2Neighbor ``f(g1)`` and ``[g2, 1]``."""
        noisy, mask = target[0], target[1] > 0
        residual = prediction[0] - noisy
        if mask.all():  # Neighbor2Neighbor's pairs: f(g1) against g2 (every pixel held out)
            return {"masked_mse": float(np.mean(residual**2))}
        return {
            "masked_mse": float(np.mean(residual[mask] ** 2)),
            "unmasked_mse": float(np.mean(residual[~mask] ** 2)),
        }

    # -- evaluation ----------------------------------------------------------------------------------

    def evaluate(self, predict: PredictFn, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        """PSNR/SSIM against the clean SEM image at every noise level: the packaged model (``predict``,
        grey levels), non-local means, a Gaussian filter and the noisy input itself; in a plain folder
        (no clean images) the Noise2Void loss on its held-out strips (:func:`.folder.evaluate`)."""
        if folder.applies(data_dir):
            return folder.evaluate(predict, data_dir, params, OUTPUT_ID)
        base = data.root(data_dir)
        clean = data.read(base / data.SEM_DIR / data.CLEAN).astype(np.float64)

        def psnr(x: np.ndarray, c: np.ndarray = clean) -> float:
            return M.psnr(np.clip(x, 0, 255), c, data_range=255.0)

        def ssim(x: np.ndarray) -> float:
            return M.ssim(np.clip(x, 0, 255), clean, data_range=255.0)

        tuning = base / data.SEM_DIR / data.TUNING_DRAW
        if tuning.is_file():
            k, _ = baseline.best(baseline.NLM_FACTORS, baseline.nlm, data.read(tuning), clean, psnr)
            k_note = f"k = {k:g} chosen on {data.TUNING_DRAW} (not scored) from {baseline.NLM_FACTORS}"
        else:
            k, k_note = DEFAULT_NLM_FACTOR, f"k = {DEFAULT_NLM_FACTOR:g} (scikit-image's suggestion)"
        methods = ("model", "nlm", "gaussian", "noisy")
        samples, per_level, gaussian_sigma = [], {}, {}
        for level, names in data.sem_files(base).items():
            images = [(name, data.read(base / name)) for name in names]
            gaussian_sigma[level], _ = baseline.best(
                baseline.GAUSSIAN_SIGMAS, baseline.gaussian, images[0][1], clean, psnr
            )
            rows = []
            for name, noisy in images:
                out = np.asarray(predict(noisy[None])[OUTPUT_ID])
                if out.shape != (1, *noisy.shape):
                    raise ValueError(f"{name}: the model returned {out.shape}, expected {(1, *noisy.shape)}")
                results = {
                    "model": out[0].astype(np.float64),  # grey levels: no rescaling
                    "nlm": baseline.nlm(noisy, k),
                    "gaussian": baseline.gaussian(noisy, gaussian_sigma[level]),
                    "noisy": noisy.astype(np.float64),
                }
                row = {m: {"psnr": psnr(v), "ssim": ssim(v)} for m, v in results.items()}
                rows.append(row)
                samples.append({"name": name, "sigma": int(level), **row})
            per_level[level] = {
                m: {s: float(np.mean([r[m][s] for r in rows])) for s in ("psnr", "ssim")} for m in methods
            }

        def flat(method: str) -> dict[str, float]:
            out = {}
            for level, scores in per_level.items():
                out[f"psnr_s{level}"] = scores[method]["psnr"]
                out[f"ssim_s{level}"] = scores[method]["ssim"]
            out["psnr_mean"] = float(np.mean([s[method]["psnr"] for s in per_level.values()]))
            out["ssim_mean"] = float(np.mean([s[method]["ssim"] for s in per_level.values()]))
            return out

        counts = {level: sum(1 for s in samples if str(s["sigma"]) == level) for level in per_level}
        trained_on_sem = params["sem_fraction"] > 0  # self-supervised on these noisy images (never the clean)
        return {
            "dataset_role": "train" if trained_on_sem else "independent",
            "dataset_name": "SEM backscatter image with synthetic Gaussian noise (sigma 25-100, JPEG)"
            + (
                "; its noisy versions were self-supervised training images, the clean image never"
                if trained_on_sem
                else ""
            ),
            "dataset_source": SEM_URL,
            "sample_count": len(samples),
            "metrics": flat("model"),
            "metrics_long": {
                **{
                    f"psnr_s{lv}": f"PSNR (dB, range 255) vs the clean image, noise sigma {lv}"
                    for lv in per_level
                },
                **{f"ssim_s{lv}": f"SSIM vs the clean image, noise sigma {lv}" for lv in per_level},
                "psnr_mean": "PSNR averaged over the noise levels",
                "ssim_mean": "SSIM averaged over the noise levels",
            },
            "baseline": {"name": baseline.NLM_NAME.format(k=k), "metrics": flat("nlm")},
            "other_baselines": {
                baseline.GAUSSIAN_NAME: flat("gaussian"),
                "noisy input (no denoising)": flat("noisy"),
            },
            "baseline_settings": {
                "nlm": k_note,
                "gaussian_sigma_px": {f"sigma {lv}": s for lv, s in gaussian_sigma.items()},
            },
            "images_per_level": counts,
            "table": results_table(per_level, counts),
            "samples": samples,
        }

    # -- packaging -----------------------------------------------------------------------------------

    def packaging(self, params: dict[str, Any]) -> PackagingInfo:
        text = (HERE / "README.md").read_text(encoding="utf-8")
        with_sem = params["sem_fraction"] > 0
        sem = " and noisy SEM images" if with_sem else ""
        return PackagingInfo(
            name="EM denoiser Noise2Void U-Net 2D",
            description=(
                "2D U-Net trained self-supervised (Noise2Void blind-spot training, no clean images) on "
                f"noisy TEM tiles, cryo-EM micrographs{sem}; it predicts each pixel from its neighbours, "
                "which removes pixel-independent noise. Input and output are grey levels: the network "
                "normalises each image itself (zero mean, unit variance) and restores its mean and standard "
                "deviation."
            ),
            task="denoising",
            inputs=(data.RAW,),  # grey levels: the network normalises (network.py), as training does
            outputs=(
                TensorInfo(
                    id=OUTPUT_ID,
                    axes="cyx",
                    channel_names=("denoised",),
                    description="denoised image in the input's grey levels (float32)",
                    processing=({"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},),
                ),
            ),
            authors=({"name": "emzoo developers"},),
            license="MIT",
            cite=(
                {
                    "text": "Krull A., Buchholz T.-O., Jug F. (2019) Noise2Void - Learning Denoising from "
                    "Single Noisy Images. CVPR 2019",
                    "doi": "10.1109/CVPR.2019.00223",
                },
                {
                    "text": "Lu C. et al. (2024) Diffusion-based deep learning method for augmenting "
                    "ultrastructural imaging and volume electron microscopy (EMDiffuse; noisy TEM tiles)",
                    "url": EMDIFFUSE_URL,
                },
                {
                    "text": "mrcfile test data: cryo-EM micrographs contributed by K. Savage (Diamond Light "
                    "Source) and M. Saur (Astex Pharmaceuticals)",
                    "url": MRCFILE_URL,
                },
                {
                    "text": "Ronneberger O., Fischer P., Brox T. (2015) U-Net: Convolutional Networks for "
                    "Biomedical Image Segmentation. MICCAI 2015",
                    "doi": "10.1007/978-3-319-24574-4_28",
                },
            ),
            tags=(
                "electron-microscopy",
                "tem",
                "cryo-em",
                *(("sem",) if with_sem else ()),
                "denoising",
                "noise2void",
                "self-supervised",
                "unet",
                "2d",
            ),
            # mixed sources of different (partly unknown) pixel sizes: a placeholder the format requires
            pixel_size={},  # the images come with no (or mixed) calibration: see the README
            pixel_unit=None,
            training_data={
                "name": "Noisy TEM tiles (EMDiffuse), cryo-EM micrographs of uncorrelated noise "
                "(mrcfile test data)"
                + (
                    ", noisy versions of an SEM backscatter image (python_for_microscopists)"
                    if with_sem
                    else ""
                ),
                "source": EMDIFFUSE_URL,
                "license": "MIT (TEM tiles, SEM); BSD-3-Clause (micrographs)",
                "split": "TEM: the last row of the 7x7 tile mosaic validates, all other tiles train; "
                f"micrographs: the bottom {params['val_rows']} rows validate, the rest trains; "
                + (
                    f"noisy SEM images: the bottom {params['val_fraction']:g} of their rows validates, the "
                    "rest trains (self-supervised: the clean image is never used); evaluation: the noisy SEM "
                    "images against the clean one at noise sigma 25, 50, 75, 100"
                    if with_sem
                    else "evaluation: the SEM backscatter image (never trained on) at noise sigma 25, 50, "
                    "75, 100"
                ),
            },
            intended_use=(
                "Removing pixel-independent noise (shot noise, read noise) from TEM, STEM and cryo-EM images "
                "and micrographs of any size (tiled), for viewing and as a first step before segmentation or "
                "particle picking. It needs no clean images: for image types it was not trained on "
                "(e.g. SEM), fine-tune it on your own noisy images, even a single one, in minutes on a CPU: "
                "emzoo train denoising --data FOLDER --init THIS_PACKAGE --out RUN, then emzoo package RUN."
            ),
            limitations=(
                "Noise2Void cannot remove noise that is correlated between neighbouring pixels (JPEG "
                "artefacts, scan-line noise, detector cross-talk, interpolated or motion-corrected frames) "
                "and blurs the finest details (single-pixel features look like noise to it); for such "
                "noise train with structured blind spots (mask_structure). Trained on TEM of brain "
                "tissue, cryo-EM micrographs and one SEM scene; on other image types it may be worse "
                "than classical non-local means (the 0.1.0 model, trained without SEM, was 5 dB below it "
                "on SEM): fine-tuning on the images themselves is the remedy. Not for quantitative "
                "intensity measurements."
            ),
            extra_card_sections={
                "Use case notes": data_section(text, "## Split"),
                "Fine-tuning on your own images": data_section(text, "## Fine-tuning on your own images"),
                "What the evaluation images are to the training data": data_section(
                    text, "## What the evaluation images are to the training data"
                ),
            },
        )

    def packaging_for(self, data_dir: Path, params: dict[str, Any]) -> PackagingInfo:
        """:meth:`packaging`, or for a run on a plain folder of images what it was trained on."""
        info = self.packaging(params)
        if not folder.applies(data_dir):
            return info
        count, name = len(folder.planes(data_dir)), Path(data_dir).name
        text = (HERE / "README.md").read_text(encoding="utf-8")
        what = f"{count} noisy image(s) of the folder {name!r}"
        return replace(
            info,
            description=(
                "2D U-Net trained self-supervised (Noise2Void blind-spot training, no clean images) on "
                f"{what} (fine-tuned from a packaged denoiser when the run started from one: see Training "
                "settings); it removes pixel-independent noise. Input and output are grey levels: the "
                "network normalises each image itself and restores its mean and standard deviation."
            ),
            tags=tuple(t for t in info.tags if t not in ("tem", "cryo-em")),
            training_data={
                "name": f"{what} (the user's own, not published)",
                # bioimage.io asks for an address; these images have none: the method's paper stands in
                "source": "https://doi.org/10.1109/CVPR.2019.00223",
                "license": "the images' own",
                "split": f"the bottom {params['val_fraction']:g} of the rows of every image validates (and "
                "evaluates, by the Noise2Void loss: no clean images), the rows above train",
            },
            intended_use=(
                "Removing pixel-independent noise from images like the ones it was trained on (same "
                "microscope, detector and settings), for viewing and as a first step before analysis."
            ),
            limitations=(
                "Trained on few images: on other kinds of images it may denoise worse or invent texture; "
                "noise correlated between neighbouring pixels (JPEG artefacts, scan lines, interpolated "
                "frames) stays, and single-pixel details are smoothed away. Its evaluation is "
                "self-supervised (no clean images). Not for quantitative intensity measurements."
            ),
            extra_card_sections={"Use case notes": data_section(text, "## Fine-tuning on your own images")},
        )


def results_table(per_level: dict[str, dict], counts: dict[str, int]) -> str:
    """Markdown: PSNR / SSIM per noise level for every method."""
    names = {
        "model": "this model (N2V)",
        "nlm": "non-local means",
        "gaussian": "Gaussian (oracle sigma)",
        "noisy": "noisy input",
    }
    head = "| method | " + " | ".join(f"sigma {lv} ({counts[lv]} img)" for lv in per_level) + " |"
    rows = [head, "|---|" + "---|" * len(per_level)]
    for key, label in names.items():
        cells = [f"{s[key]['psnr']:.2f} dB / {s[key]['ssim']:.3f}" for s in per_level.values()]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def data_section(markdown: str, heading: str) -> str:
    start = markdown.find(heading)
    if start < 0:
        return ""
    end = markdown.find("\n## ", start + len(heading))
    return markdown[start + len(heading) : end if end > 0 else None].strip()
