"""Nanoparticle counting in HAADF/bright-field STEM images with a density-map U-Net."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emzoo import metrics as M
from emzoo.errors import UsageError
from emzoo.packaging.info import PackagingInfo, PredictFn, TensorInfo
from emzoo.train.usecase import UNetUseCase, register_usecase

from . import baseline, data

HERE = Path(__file__).resolve().parent
OUTPUT_ID = "density"
SAMPLE = "Ru2"  # the test image that makes the package's test tensors and covers
VAL_MATCH_RADIUS = 6.0  # px: validation F1 (the test uses half the median box size of each image)
DATA_URL = "https://github.com/ArdaGen/STEM-Automated-Nanoparticle-Analysis-YOLOv8-SAM"


def counting_settings(params: dict[str, Any]) -> dict[str, Any]:
    """``config.emzoo.counting`` of the package (see :mod:`emzoo.tasks.counting`)."""
    return {
        "output": OUTPUT_ID,
        "count": "integral",
        "min_distance_px": int(params["peak_min_distance"]),
        "threshold": float(params["peak_threshold"]),
        "smooth_sigma_px": float(params["peak_smooth_sigma"]),
    }


def _config(params: dict[str, Any]):
    from emzoo.tasks.counting import CountingConfig

    return CountingConfig.from_dict(counting_settings(params))


@register_usecase
class ParticleCounting(UNetUseCase):
    """Nanoparticles in STEM images (Cu, Pd, Pt, PtCo, PtW, Ru): density-map U-Net; count = map integral."""

    name = "particle_counting"
    params_file = HERE / "params.yaml"
    main_metric = ("count_rel_error", "min")
    size_params = ("crop_size", "val_crop")  # multiples of 2**depth
    tiny_params = {  # noqa: RUF012  (class-level constant, never mutated)
        "epochs": 1,
        "iterations_per_epoch": 1,
        "batch_size": 2,
        "crop_size": 32,
        "val_crop": 64,
        "depth": 2,
        "features": 4,
    }

    def __init__(self) -> None:
        from emzoo.train.params import load_param_file, resolve_params

        self.configure(resolve_params(load_param_file(self.params_file)))

    # -- data ----------------------------------------------------------------------------------------

    def check_data(self, data_dir: Path) -> None:
        data.check(data_dir)

    def split(self, data_dir: Path, params: dict[str, Any]) -> dict[str, list[str]]:
        return data.split(data_dir)

    def check_params(self, params: dict[str, Any]) -> None:
        super().check_params(params)  # crop_size and val_crop: multiples of 2**depth
        if not 0 < params["scale_min"] <= params["scale_max"]:
            raise UsageError(
                f"need 0 < scale_min <= scale_max, got scale_min {params['scale_min']}, "
                f"scale_max {params['scale_max']}"
            )
        if not 0 < params["sigma_min"] <= params["sigma_max"]:
            raise UsageError(
                f"need 0 < sigma_min <= sigma_max, got {params['sigma_min']}, {params['sigma_max']}"
            )
        if not 0 <= params["percentile_low"] < params["percentile_high"] <= 100:
            raise UsageError("need 0 <= percentile_low < percentile_high <= 100")
        if params["density_scale"] <= 0 or params["intensity_jitter"] < 0:
            raise UsageError("density_scale must be > 0 and intensity_jitter >= 0")
        _config(params)  # the counting settings must be valid

    def datasets(self, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        self.configure(params)
        split = self.split(data_dir, params)
        train = data.load(data_dir, split["train"], params)
        small = min(min(s.image.shape) for s in train)
        if params["crop_size"] > small:
            from emzoo.errors import InputError

            raise InputError(
                f"crop_size {params['crop_size']} is larger than the smallest training image ({small} px)"
            )
        return {
            "train": data.CropDataset(
                train,
                params,
                length=params["iterations_per_epoch"] * params["batch_size"],
                seed=params["seed"],
            ),
            "val": data.WindowDataset(data.load(data_dir, split["val"], params), params),
            "test": [(raw[None], boxes) for _, raw, boxes in data.load_raw(data_dir, split["test"])],
        }

    def make_tiny_data(self, out_dir: Path) -> Path:
        return data.make_synthetic(Path(out_dir))

    def training_images(self, data_dir: Path, params: dict[str, Any]):
        """The raw training images (2D, uint8), for the packager's intensity statistics."""
        for _, raw, _ in data.load_raw(data_dir, data.split(data_dir)["train"]):
            yield raw

    def sample_input(self, data_dir: Path) -> np.ndarray:
        """A test image: Ru2 (640 px, 173 particles of about 17 px) for the STEM data, whose density map
        peaks well above 0.01 (the packager's output tolerance is 1% of the test output's maximum)."""
        test = data.split(data_dir)["test"]
        name = next((n for n in test if Path(n).stem == SAMPLE), test[0])
        _, raw, _ = data.load_raw(data_dir, [name])[0]
        return raw[None]  # (1, y, x) uint8

    # -- model, loss, metrics ------------------------------------------------------------------------

    def loss(self, params: dict[str, Any]):
        from .loss import DensityLoss

        return DensityLoss(
            scale=params["density_scale"], count_weight=params["count_weight"], cell=params["count_cell"]
        )

    def postprocess(self, output: np.ndarray) -> np.ndarray:
        """The package's ``scale_linear``: the network predicts ``density_scale`` x the density."""
        return (np.asarray(output, np.float32) / np.float32(self._scale)).astype(np.float32)

    def metrics(self, prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """``prediction``: density per pixel; ``target``: the true density of the validation window."""
        from emzoo.tasks.counting import find_centres

        predicted, true = float(prediction.sum()), float(target.sum())
        config = self._counting

        def centres(density: np.ndarray) -> np.ndarray:
            return find_centres(
                density,
                min_distance_px=config.min_distance_px,
                threshold=config.threshold,
                smooth_sigma_px=config.smooth_sigma_px,
            )[:, :2]

        found, truth = centres(prediction), centres(target)  # the same peak finder on both maps
        return {
            "count_abs_error": abs(predicted - true),
            "count_rel_error": abs(predicted - true) / max(true, 1.0),
            "f1": M.detection_f1(found, truth, max_distance=VAL_MATCH_RADIUS),
        }

    def configure(self, params: dict[str, Any]) -> None:
        """Remember the parameters that ``postprocess`` and ``metrics`` (which get no params) need;
        ``datasets`` and ``packaging`` call it with the run's parameters."""
        self._scale = float(params["density_scale"])
        self._counting = _config(params)

    def package_config(self, params: dict[str, Any]) -> dict[str, Any]:
        """Extra ``config.emzoo`` keys of the package: how to count with it."""
        return {"counting": counting_settings(params)}

    # -- evaluation ----------------------------------------------------------------------------------

    def evaluate(self, predict: PredictFn, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        """The packaged model (``predict``) and the LoG baseline on the test images, same metrics."""
        from emzoo.tasks.counting import count_map

        config = _config(params)
        log_settings = baseline.settings(params)
        names = data.split(data_dir)["test"]
        samples = []
        for name, raw, boxes in data.load_raw(data_dir, names):
            density = np.asarray(predict(raw[None])[OUTPUT_ID])
            if density.shape != (1, *raw.shape):
                raise ValueError(f"{name}: the model returned {density.shape}, expected {(1, *raw.shape)}")
            result = count_map(density, config)
            radius = 0.5 * float(np.median(boxes.sizes))
            blobs = baseline.detect(raw, **log_settings)
            samples.append(
                {
                    "name": name,
                    "material": data.material(name),
                    "true_count": len(boxes),
                    "match_radius_px": radius,
                    "count": result.count,
                    "n_centres": result.n_centres,
                    "baseline_count": len(blobs),
                    "metrics": _scores(result.count, result.centres[:, :2], boxes, radius, peaks=True),
                    "baseline_metrics": _scores(float(len(blobs)), blobs, boxes, radius, peaks=False),
                }
            )

        def mean(key: str) -> dict[str, float]:
            return {k: float(np.mean([s[key][k] for s in samples])) for k in samples[0][key]}

        metrics = mean("metrics")
        true = np.array([s["true_count"] for s in samples], np.float64)
        metrics["count_mae"] = M.count_mae(np.array([s["count"] for s in samples]), true)
        metrics["count_rel_error"] = M.count_relative_error(np.array([s["count"] for s in samples]), true)
        base = mean("baseline_metrics")
        base["count_mae"] = M.count_mae(np.array([s["baseline_count"] for s in samples], np.float64), true)
        base["count_rel_error"] = M.count_relative_error(
            np.array([s["baseline_count"] for s in samples], np.float64), true
        )
        return {
            "dataset_role": "test",
            "dataset_name": "STEM nanoparticles, test split",
            "dataset_source": DATA_URL,
            "sample_count": len(samples),
            "metrics": metrics,
            "metrics_long": METRICS_LONG,
            "baseline": {"name": baseline.describe(log_settings), "metrics": base},
            "samples": samples,
        }

    # -- packaging -----------------------------------------------------------------------------------

    def packaging(self, params: dict[str, Any]) -> PackagingInfo:
        self.configure(params)
        text = (HERE / "README.md").read_text(encoding="utf-8")
        gain = 1.0 / float(params["density_scale"])
        return PackagingInfo(
            name="EM nanoparticle counter (density U-Net)",
            description=(
                "2D U-Net that turns a HAADF or bright-field STEM image of supported metal nanoparticles "
                "into a density map: each particle adds a small blob that sums to 1, so the sum of the map "
                "over any region is the number of particles in it, and the blob maxima mark the particle "
                "centres."
            ),
            task="counting",
            # the normalisation that training used (data.normalise)
            inputs=(data.raw_tensor(params["percentile_low"], params["percentile_high"]),),
            outputs=(
                TensorInfo(
                    id=OUTPUT_ID,
                    axes="cyx",
                    channel_names=("particles_per_pixel",),
                    description="particle density (particles per pixel): its sum is the particle count",
                    processing=(
                        {"id": "scale_linear", "kwargs": {"gain": gain, "offset": 0.0}},
                        {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                    ),
                ),
            ),
            authors=({"name": "emzoo developers"},),
            license="MIT",
            cite=(
                {
                    "text": "Gen A. et al., STEM automated nanoparticle analysis with YOLOv8 and SAM "
                    "(data set: 25 annotated HAADF/bright-field STEM images of supported nanoparticles)",
                    "url": DATA_URL,
                },
                {
                    "text": "Lempitsky V., Zisserman A. (2010) Learning to count objects in images. NIPS 23",
                    "url": "https://papers.nips.cc/paper/2010/hash/fe73f687e5bc5280214e0486b273a5f9-Abstract.html",
                },
                {
                    "text": "Ronneberger O., Fischer P., Brox T. (2015) U-Net: Convolutional Networks for "
                    "Biomedical Image Segmentation. MICCAI 2015",
                    "doi": "10.1007/978-3-319-24574-4_28",
                },
            ),
            tags=(
                "electron-microscopy",
                "stem",
                "haadf",
                "nanoparticles",
                "catalysis",
                "counting",
                "density-map",
                "detection",
                "unet",
                "2d",
            ),
            pixel_size={},  # the images come with no (or mixed) calibration: see the README
            pixel_unit=None,
            training_data={
                "name": "STEM nanoparticles (25 HAADF/bright-field STEM images with YOLO boxes)",
                "source": DATA_URL,
                "license": "MIT",
                "split": "by image: test "
                + ", ".join(data.TEST)
                + "; validation "
                + ", ".join(data.VAL)
                + "; the other 15 train",
            },
            intended_use=(
                "Counting supported metal nanoparticles in HAADF-STEM (bright particles) or bright-field "
                "STEM/TEM (dark particles) images, and locating their centres, where particles are about "
                "6-80 px across. The count is the sum of the density map (emzoo predict writes it per "
                "image); centres are the map's local maxima."
            ),
            limitations=(
                "Trained on 15 images of six catalyst systems from one source; other supports, contrasts "
                "or particle sizes outside about 6-80 px (rescale the image first: the JPEGs carry no pixel "
                "size, so neither does this description; the model works in pixels) give less reliable "
                "counts. Touching or overlapping particles merge into one maximum (the count from the "
                "integral still sees both). Very large particles (over about 90 px, beyond the receptive "
                "field) may count as several or as a fraction. Check the overlay before trusting a count."
            ),
            extra_card_sections={
                "Use case notes": _section(text, "## Split")
                + "\n\n"
                + _section(text, "## Normalisation and scale"),
                "How to count": _section(text, "## Counting with the package"),
            },
        )


METRICS_LONG = {
    "count_mae": "mean absolute error of the per-image count (particles)",
    "count_rel_error": "mean over images of |count - true count| / true count",
    "precision": "matched centres / predicted centres (match radius: half the image's median box size)",
    "recall": "matched box centres / all box centres (same radius)",
    "f1": "harmonic mean of precision and recall of the centres",
    "peak_count_mae": "mean absolute error of the number of centres (peaks) per image",
}


def _scores(
    count: float, centres: np.ndarray, boxes: data.Boxes, radius: float, *, peaks: bool
) -> dict[str, float]:
    truth = boxes.centres
    out = {
        "precision": M.detection_precision(centres, truth, max_distance=radius),
        "recall": M.detection_recall(centres, truth, max_distance=radius),
        "f1": M.detection_f1(centres, truth, max_distance=radius),
    }
    if peaks:
        out["peak_count_mae"] = float(abs(len(centres) - len(truth)))
    return out


def _section(markdown: str, heading: str) -> str:
    start = markdown.find(heading)
    if start < 0:
        return ""
    end = markdown.find("\n## ", start + len(heading))
    return markdown[start + len(heading) : end if end > 0 else None].strip()
