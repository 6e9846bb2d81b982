"""Membrane segmentation of ssTEM neural tissue (ISBI 2012) with the shared 2D U-Net."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emzoo import metrics as M
from emzoo.errors import UsageError
from emzoo.packaging.info import PackagingInfo, PredictFn, TensorInfo
from emzoo.train.usecase import UNetUseCase, register_usecase

from . import baseline, data
from .weights import boundary_weights

HERE = Path(__file__).resolve().parent
OUTPUT_ID = "membrane_probability"
THRESHOLD = 0.5  # membrane where the probability is above it (metrics and masks)
# The package asks for test-time augmentation; these metrics are also reported without it, suffixed:
WITHOUT_TTA = ("v_rand", "v_info", "dice")
NO_TTA = "_no_tta"


@register_usecase
class MembraneSegmentation(UNetUseCase):
    """Cell membranes in ssTEM of neural tissue (ISBI 2012, 4 nm pixels): 2D U-Net, membrane probability."""

    name = "membrane_segmentation"
    params_file = HERE / "params.yaml"
    main_metric = ("adapted_rand_error", "min")
    tiny_params = {  # noqa: RUF012  (class-level constant, never mutated)
        "epochs": 1,
        "iterations_per_epoch": 1,
        "batch_size": 2,
        "crop_size": 32,
        "depth": 2,
        "features": 4,
    }

    # -- data ----------------------------------------------------------------------------------------

    def check_data(self, data_dir: Path) -> None:
        data.check(data_dir)

    def split(self, data_dir: Path, params: dict[str, Any]) -> dict[str, list[str]]:
        return data.split(data_dir)

    def check_params(self, params: dict[str, Any]) -> None:
        super().check_params(params)  # crop_size: a multiple of 2**depth
        for name in ("intensity_jitter", "elastic_deformation", "boundary_weight"):
            if params[name] < 0:
                raise UsageError(f"{name} must be >= 0, not {params[name]}")

    def datasets(self, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        from emzoo.errors import InputError
        from emzoo.train.augment import Augmentation
        from emzoo.train.data import PairDataset

        split = self.split(data_dir, params)
        images, masks = data.load(data_dir, split["train"])
        crop = params["crop_size"]
        if any(crop > s for s in images[0].shape[1:]):
            raise InputError(f"crop_size {crop} is larger than the images ({images[0].shape[1:]})")
        augmentation = Augmentation(
            crop=(crop, crop),
            flips=params["flips"],
            rot90=params["rotations"],
            intensity=params["intensity_jitter"],
            elastic=params["elastic_deformation"],
        )
        if params["boundary_weight"] > 0:  # the loss's second target channel: per-pixel weights
            w0 = params["boundary_weight"]
            masks = [np.concatenate([m, boundary_weights(m[0], w0)[None]]) for m in masks]
        train = PairDataset(
            [data.normalise(a) for a in images],
            masks,
            names=split["train"],
            augmentation=augmentation,
            length=params["iterations_per_epoch"] * params["batch_size"],
            seed=params["seed"],
        )
        val_images, val_masks = data.load(data_dir, split["val"])
        rule = self.size_rule(params)
        if not all(rule.accepts(s) for s in val_images[0].shape[1:]):
            raise InputError(f"validation images {val_images[0].shape[1:]} are not multiples of {rule.step}")
        val = PairDataset([data.normalise(a) for a in val_images], val_masks, names=split["val"])
        test_images, test_masks = data.load(data_dir, split["test"])
        return {"train": train, "val": val, "test": list(zip(test_images, test_masks, strict=True))}

    def make_tiny_data(self, out_dir: Path) -> Path:
        return data.make_synthetic(Path(out_dir))

    def training_images(self, data_dir: Path, params: dict[str, Any]):
        """The raw training slices (``yx`` uint8), for the packager's intensity statistics."""
        images, _ = data.load(data_dir, data.split(data_dir)["train"])
        for image in images:
            yield image[0]

    def sample_input(self, data_dir: Path) -> np.ndarray:
        images, _ = data.load(data_dir, data.split(data_dir)["test"][:1])
        return images[0]  # (1, y, x) uint8

    # -- model, loss, metrics ------------------------------------------------------------------------

    def loss(self, params: dict[str, Any]):
        from .loss import BceDiceLoss

        return BceDiceLoss(dice_weight=params["dice_weight"])

    def postprocess(self, output: np.ndarray) -> np.ndarray:
        return (1.0 / (1.0 + np.exp(-output.astype(np.float32)))).astype(np.float32)

    def metrics(self, prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """``prediction``: membrane probability, ``target``: membrane mask (both ``cyx``)."""
        return {
            "pixel_error": M.pixel_error(prediction, target, threshold=THRESHOLD),
            "dice": M.dice(prediction, target, threshold=THRESHOLD),
            "adapted_rand_error": M.membrane_adapted_rand_error(prediction, target, threshold=THRESHOLD),
            # the ISBI 2012 challenge's scores (best over thresholds), comparable with its leaderboard
            "v_rand": M.v_rand(prediction, target),
            "v_info": M.v_info(prediction, target),
        }

    def read_label(self, path: Path) -> np.ndarray:
        """A 0/255 label image -> the membrane mask (``cyx``)."""
        return (data.read_array(path) == data.MEMBRANE)[None]

    # -- packaging -----------------------------------------------------------------------------------

    def evaluate(self, predict: PredictFn, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        """The packaged model (``predict``, with test-time augmentation as the package asks, and the ISBI
        scores and Dice also without it) and the baseline on the test slices, same metrics."""
        names = data.split(data_dir)["test"]
        images, masks = data.load(data_dir, names)
        sigma = float(params.get("baseline_sigma", 2.0))
        samples = []
        for name, image, mask in zip(names, images, masks, strict=True):
            runs = {}
            for tta in (True, False):  # the package runs with TTA (package_config); both are reported
                runs[tta] = np.asarray(predict(image, tta=tta)[OUTPUT_ID])
                if runs[tta].shape != mask.shape:
                    raise ValueError(f"{name}: the model returned {runs[tta].shape}, expected {mask.shape}")
            plain = self.metrics(runs[False], mask)
            base = self.metrics(baseline.membrane_mask(image, sigma=sigma), mask)
            samples.append(
                {
                    "name": name,
                    "metrics": self.metrics(runs[True], mask)
                    | {f"{k}{NO_TTA}": plain[k] for k in WITHOUT_TTA},
                    # test-time augmentation does not apply to the baseline: its values stand in both rows
                    "baseline_metrics": base | {f"{k}{NO_TTA}": base[k] for k in WITHOUT_TTA},
                }
            )

        def mean(key: str) -> dict[str, float]:
            return {k: float(np.mean([s[key][k] for s in samples])) for k in samples[0][key]}

        return {
            "dataset_role": "test",
            "sample_count": len(samples),
            "metrics": mean("metrics"),
            "baseline": {"name": baseline.NAME.format(sigma=sigma), "metrics": mean("baseline_metrics")},
            "samples": samples,
        }

    def package_config(self, params: dict[str, Any]) -> dict[str, Any]:
        """The package asks for test-time augmentation (the mean over the 8 flips and turns): membranes
        have no preferred direction, and the averaged map is measured better (README.md)."""
        return {"tta": True}

    def packaging(self, params: dict[str, Any]) -> PackagingInfo:
        text = (HERE / "README.md").read_text(encoding="utf-8")
        return PackagingInfo(
            name="EM membrane U-Net 2D",
            description=(
                "2D U-Net that predicts, for every pixel of a serial-section TEM image of neural tissue, "
                "the probability that it lies on a cell membrane (trained on the ISBI 2012 data, "
                "4x4 nm pixels)."
            ),
            task="semantic segmentation",
            inputs=(data.RAW,),  # the normalisation that training used (data.normalise)
            outputs=(
                TensorInfo(
                    id=OUTPUT_ID,
                    axes="cyx",
                    channel_names=("membrane",),
                    description="membrane probability (0 = cell interior, 1 = membrane)",
                    processing=(
                        {"id": "sigmoid", "kwargs": {}},
                        {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                    ),
                    data_range=(0.0, 1.0),
                ),
            ),
            authors=({"name": "emzoo developers"},),
            license="MIT",
            cite=(
                {
                    "text": "Cardona A. et al. (2010) An integrated micro- and macroarchitectural "
                    "analysis of the Drosophila brain by computer-assisted serial section electron "
                    "microscopy. PLoS Biol 8(10):e1000500",
                    "doi": "10.1371/journal.pbio.1000500",
                },
                {
                    "text": "Arganda-Carreras I. et al. (2015) Crowdsourcing the creation of image "
                    "segmentation algorithms for connectomics. Front. Neuroanat. 9:142",
                    "doi": "10.3389/fnana.2015.00142",
                },
                {
                    "text": "Ronneberger O., Fischer P., Brox T. (2015) U-Net: Convolutional Networks for "
                    "Biomedical Image Segmentation. MICCAI 2015",
                    "doi": "10.1007/978-3-319-24574-4_28",
                },
            ),
            tags=(
                "electron-microscopy",
                "sstem",
                "membrane-segmentation",
                "semantic-segmentation",
                "unet",
                "2d",
                "drosophila",
                "connectomics",
                "neurons",
            ),
            pixel_size={"y": 4.0, "x": 4.0},
            pixel_unit="nanometer",
            training_data={
                "name": "ISBI 2012 EM segmentation challenge, 25 labelled training slices "
                "(512x512, 4x4x50 nm)",
                "source": "ssTEM of the Drosophila first-instar larva ventral nerve cord "
                "(Cardona et al. 2010), as distributed in zhixuhao/unet @ b45af4d (data/membrane)",
                "license": "released by the ISBI 2012 organisers for research use (repository: MIT); "
                "cite Cardona et al. 2010 and Arganda-Carreras et al. 2015",
                "split": "contiguous slices: 0-16 training, 17-19 validation, 20-24 test",
            },
            intended_use=(
                "Highlighting cell membranes in serial-section TEM images of neural tissue at about 4 nm per "
                "pixel, as the first step of a neuron or cell segmentation (threshold the probability, or "
                "use it as the boundary map of a watershed or agglomeration)."
            ),
            limitations=(
                "Trained on 17 slices of one Drosophila larva ssTEM stack; expect worse results on other "
                "tissues, stains, microscopes (SEM, FIB-SEM) or pixel sizes far from 4 nm (rescale first). "
                "It sees each slice alone (2D), so membranes cut at a shallow angle look blurred and may "
                "be missed. Mitochondria and other dark membranes inside cells are sometimes marked. The "
                "probability is not calibrated; proofread any segmentation built on it."
            ),
            extra_card_sections={"Use case notes": _section(text, "## Split")},
        )


def _section(markdown: str, heading: str) -> str:
    """One section of the README (heading to the next heading of the same level)."""
    start = markdown.find(heading)
    if start < 0:
        return ""
    end = markdown.find("\n## ", start + len(heading))
    return markdown[start + len(heading) : end if end > 0 else None].strip()
