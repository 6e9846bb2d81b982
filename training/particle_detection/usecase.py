"""Nanoparticle detection in HAADF and bright-field STEM images: a CenterNet-style U-Net with a centre
heat map and a diameter map; the count is the number of centres above a calibrated score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emzoo.errors import UsageError
from emzoo.packaging.info import PackagingInfo, PredictFn, TensorInfo
from emzoo.train.usecase import UNetUseCase, register_usecase

from . import baseline, data
from .card import ANCHOR, DATA_URL, METRICS_LONG, packaging_info, per_image_table

HERE = Path(__file__).resolve().parent
HEAT, DIAMETER = "heat", "diameter"
SAMPLE = "Ru2"
# validation F1 at each (f1_t10 ... f1_t60): the calibration; an under-confident heat map early in
# training peaks below 0.3, so the low thresholds keep its progress visible
THRESHOLDS = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6)
SCORES = ("f1", "precision", "recall", "count_rel_error", "box_ap50")


def counting_settings(params: dict[str, Any], threshold: float | None = None) -> dict[str, Any]:
    """``config.emzoo.counting`` of the package: count = centres of the heat map above the threshold."""
    return {
        "output": HEAT,
        "count": "peaks",
        "threshold": float(params["score_threshold"] if threshold is None else threshold),
        "min_distance_px": int(params["peak_min_distance"]),
        "smooth_sigma_px": float(params["peak_smooth_sigma"]),
        "sizes": DIAMETER,
    }


def _config(params: dict[str, Any], threshold: float | None = None):
    from emzoo.tasks.counting import CountingConfig

    return CountingConfig.from_dict(counting_settings(params, threshold))


def best_threshold(validation: dict[str, float]) -> tuple[float, float] | None:
    """``(threshold, mean F1)`` of the best ``f1_tNN`` among validation metrics, or None."""
    found = [
        (validation[f"f1_t{round(100 * t)}"], t) for t in THRESHOLDS if f"f1_t{round(100 * t)}" in validation
    ]
    if not found:
        return None
    f1, t = max(found)
    return t, f1


@register_usecase
class ParticleDetection(UNetUseCase):
    """Nanoparticles in STEM images: centre heat map + diameter map; count = centres above a score."""

    name = "particle_detection"
    params_file = HERE / "params.yaml"
    # early stopping and the best epoch: F1 at the best threshold (the package is calibrated to it), not
    # at the fixed score_threshold, which a still under-confident heat map misses entirely
    main_metric = ("f1_best", "max")
    evaluation_metric = ("f1", "max")
    size_params = ("crop_size", "val_crop")
    tiny_params = {  # noqa: RUF012  (class-level constant, never mutated)
        "epochs": 1,
        "iterations_per_epoch": 1,
        "batch_size": 2,
        "crop_size": 32,
        "val_crop": 64,
        "depth": 2,
        "features": 4,
        "max_features": 8,
        "local_cell": 1,
    }

    def __init__(self) -> None:
        from emzoo.train.params import load_param_file, resolve_params

        self.threshold_calibration: dict[str, Any] | None = None  # set by calibrate_package
        self.configure(resolve_params(load_param_file(self.params_file)))

    def configure(self, params: dict[str, Any]) -> None:
        """Remember what ``metrics`` (which gets no params) needs."""
        self._params = dict(params)

    # -- data ----------------------------------------------------------------------------------------

    def check_data(self, data_dir: Path) -> None:
        data.pc.check(data_dir)

    def split(self, data_dir: Path, params: dict[str, Any]) -> dict[str, list[str]]:
        return data.pc.split(data_dir)

    def check_params(self, params: dict[str, Any]) -> None:
        super().check_params(params)
        pairs = (("scale_min", "scale_max"), ("sigma_min", "sigma_max"), ("size_min_px", "size_max_px"))
        for low, high in pairs:
            if not 0 < params[low] <= params[high]:
                raise UsageError(f"need 0 < {low} <= {high}, got {params[low]} and {params[high]}")
        if not 0 <= params["percentile_low"] < params["percentile_high"] <= 100:
            raise UsageError("need 0 <= percentile_low < percentile_high <= 100")
        if not 0 <= params["invert_probability"] <= 1 or params["intensity_jitter"] < 0:
            raise UsageError("invert_probability must be 0..1 and intensity_jitter >= 0")
        if not 0 < params["score_threshold"] < 1:
            raise UsageError(f"score_threshold must be between 0 and 1, got {params['score_threshold']}")
        if params["local_cell"] < 1 or params["max_features"] < params["features"]:
            raise UsageError("local_cell must be >= 1 and max_features >= features")
        _config(params)

    def _samples(self, data_dir: Path, names: list[str], params: dict[str, Any]) -> list:
        return data.pc.load(data_dir, names, params)

    def datasets(self, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        self.configure(params)
        split = self.split(data_dir, params)
        train = self._samples(data_dir, split["train"], params)
        length = params["iterations_per_epoch"] * params["batch_size"]
        return {
            "train": data.CropDataset(train, params, length=length, seed=params["seed"]),
            "val": data.WindowDataset(self._samples(data_dir, split["val"], params), params),
            "test": [(raw[None], boxes) for _, raw, boxes in data.pc.load_raw(data_dir, split["test"])],
        }

    def make_tiny_data(self, out_dir: Path) -> Path:
        return data.make_synthetic(Path(out_dir))

    def training_images(self, data_dir: Path, params: dict[str, Any]):
        for _, raw, _ in data.pc.load_raw(data_dir, data.pc.split(data_dir)["train"]):
            yield raw

    def intensity_group(self, image: np.ndarray) -> str:
        """HAADF (bright particles) or bright field (dark particles): their statistics differ."""
        return "bright_field" if data.pc.is_bright_field(image) else "haadf"

    def sample_input(self, data_dir: Path) -> np.ndarray:
        """Ru2 (640 px, 173 particles of about 17 px) for the STEM data, else the first test image."""
        test = data.pc.split(data_dir)["test"]
        name = next((n for n in test if Path(n).stem == SAMPLE), test[0])
        return data.pc.load_raw(data_dir, [name])[0][1][None]

    # -- model, loss, metrics ------------------------------------------------------------------------

    def model_kwargs(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "depth": params["depth"],
            "features": params["features"],
            "max_features": params["max_features"],
            "local_contrast": bool(params["local_contrast"]),
            "local_cell": params["local_cell"],
            "prior_diameter": float(params["prior_diameter"]),
        }

    def build_model(self, params: dict[str, Any]):
        from .network import ParticleDetector

        return ParticleDetector(**self.model_kwargs(params))

    def architecture(self, params: dict[str, Any]) -> tuple[Path, str, dict[str, Any]]:
        return HERE / "network.py", "ParticleDetector", self.model_kwargs(params)

    def loss(self, params: dict[str, Any]):
        from .loss import DetectionLoss

        return DetectionLoss(size_weight=params["size_weight"], size_region=params["size_region"])

    def postprocess(self, output) -> np.ndarray:
        """``(1, y, x)`` heat map, or ``(2, y, x)`` heat and diameter when given both outputs.

        The trainer passes ``model(x)[0]`` of a batch of one: for this two-output network that is the
        heat map of the batch, ``(1, 1, y, x)``; a list of the outputs (without batch) is taken too."""
        if isinstance(output, (list, tuple)):
            return np.concatenate([np.asarray(o, np.float32).reshape(-1, *np.shape(o)[-2:]) for o in output])
        a = np.asarray(output, np.float32)
        return a.reshape(-1, *a.shape[-2:])

    def metrics(self, prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """Centre F1, precision, recall and count error at ``score_threshold`` (matched within half the
        particle's size), and F1 at each threshold of ``THRESHOLDS`` (``f1_t30``: at 0.3)."""
        from emzoo.tasks.counting import count_map
        from emzoo.tasks.detection import detection_scores

        p = self._params
        truth = data.truth_of(target)
        out: dict[str, float] = {}
        for t in dict.fromkeys((*THRESHOLDS, p["score_threshold"])):
            result = count_map(prediction[0], _config(p, t))
            diameters = (
                prediction[1][tuple(result.centres[:, :2].astype(int).T)] if len(prediction) > 1 else None
            )
            scores = detection_scores(result.centres, truth, diameters=diameters)
            if t == p["score_threshold"]:
                out.update({k: scores[k] for k in SCORES if k in scores})
            if t in THRESHOLDS:
                out[f"f1_t{round(100 * t)}"] = scores["f1"]
        out["f1_best"] = max(out["f1"], *(out[f"f1_t{round(100 * t)}"] for t in THRESHOLDS))
        return out

    def calibrate(self, params: dict[str, Any], validation: dict[str, float]) -> dict[str, Any]:
        """The package's ``score_threshold``: the threshold of the best mean validation F1 (of the best
        epoch's ``metrics.json``), when the validation metrics have them."""
        best = best_threshold(validation)
        return {"score_threshold": best[0]} if best else {}

    def calibrate_package(self, predict: PredictFn, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        """The package's ``score_threshold``: the best mean F1 of the packaged model on the *whole*
        validation images, tiled as users run it. Training validates on 512 px windows cut where the
        particles are densest, which favour a lower threshold than whole images with their sparse
        regions (both runs so far: 0.1-0.15 on the windows, 0.2 on whole images)."""
        self.threshold_calibration = self._val_calibration(
            predict, data_dir, data.pc.split(data_dir)["val"], params
        )
        best = self.threshold_calibration["best_threshold"]
        return {} if best is None else {"score_threshold": best}

    def package_config(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"counting": counting_settings(params)}

    # -- evaluation ----------------------------------------------------------------------------------

    def evaluate(self, predict: PredictFn, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        """The packaged model (centres above the package's threshold, its diameters) and the LoG and
        Otsu baselines on the test images, scored alike (:func:`emzoo.tasks.detection.detection_scores`);
        also the threshold that the packaged model's F1 on the validation images prefers."""
        from emzoo.tasks.counting import count_outputs
        from emzoo.tasks.detection import detection_scores, read_particle_labels

        split = data.pc.split(data_dir)
        by_name = {i.name: i for i in data.pc.items(data_dir)}
        log_settings = baseline.log_settings(params)
        otsu = {
            "smooth_sigma": params["otsu_smooth_sigma"],
            "min_area": params["otsu_min_area"],
            "low": params["percentile_low"],
            "high": params["percentile_high"],
        }
        config = _config(params)
        calibration, self.threshold_calibration = self.threshold_calibration, None  # this packaging's only
        samples = []
        for name, raw, _ in data.pc.load_raw(data_dir, split["test"]):
            truth = read_particle_labels(by_name[name].label, raw.shape)
            result = count_outputs(_outputs(predict, raw), config)
            found, sizes = baseline.log_blobs(raw, log_settings)
            o_found, o_sizes = baseline.otsu_components(raw, **otsu)
            samples.append(
                {
                    "name": name,
                    "material": data.pc.material(name),
                    "true_count": len(truth),
                    "count": result.count,
                    "median_diameter_px": float(np.median(result.diameters)) if result.n_centres else 0.0,
                    "true_median_diameter_px": float(np.median(np.sqrt(np.prod(truth.sizes, axis=1)))),
                    "metrics": _pick(detection_scores(result.centres, truth, diameters=result.diameters)),
                    "baseline_metrics": _pick(detection_scores(found, truth, diameters=sizes)),
                    "otsu_metrics": _pick(detection_scores(o_found, truth, diameters=o_sizes)),
                }
            )

        def mean(key: str) -> dict[str, float]:
            return {k: float(np.mean([s[key][k] for s in samples])) for k in samples[0][key]}

        metrics = mean("metrics")
        metrics["count_rel_error_median"] = float(
            np.median([s["metrics"]["count_rel_error"] for s in samples])
        )
        metrics["f1_min"] = float(min(s["metrics"]["f1"] for s in samples))
        log_means, otsu_means = mean("baseline_metrics"), mean("otsu_metrics")
        means = {"metrics": metrics, "baseline_metrics": log_means, "otsu_metrics": otsu_means}
        return {
            "dataset_role": "test",
            "dataset_name": "STEM nanoparticles, test split",
            "dataset_source": DATA_URL,
            "sample_count": len(samples),
            "metrics": metrics,
            "metrics_long": METRICS_LONG,
            "score_threshold": float(params["score_threshold"]),
            "validation_calibration": calibration
            or self._val_calibration(predict, data_dir, split["val"], params),
            "baseline": {"name": baseline.describe_log(log_settings), "metrics": log_means},
            "other_baselines": {baseline.describe_otsu(params): otsu_means},
            "published_anchor": ANCHOR,
            "table": per_image_table(samples, means),
            "samples": samples,
        }

    def _val_calibration(
        self, predict: PredictFn, data_dir: Path, names: list[str], params
    ) -> dict[str, Any]:
        """Mean F1 of the packaged model on the whole validation images at each threshold."""
        from emzoo.tasks.counting import count_outputs
        from emzoo.tasks.detection import detection_scores, read_particle_labels

        by_name = {i.name: i for i in data.pc.items(data_dir)}
        f1 = {t: [] for t in THRESHOLDS}
        for name, raw, _ in data.pc.load_raw(data_dir, names):
            truth = read_particle_labels(by_name[name].label, raw.shape)
            outputs = _outputs(predict, raw)
            for t in THRESHOLDS:
                result = count_outputs(outputs, _config(params, t))
                f1[t].append(detection_scores(result.centres, truth, diameters=result.diameters)["f1"])
        means = {f"f1_t{round(100 * t)}": float(np.mean(v)) for t, v in f1.items()}
        best = best_threshold(means)
        return {"f1": means, "best_threshold": best[0] if best else None}

    # -- packaging -----------------------------------------------------------------------------------

    def packaging(self, params: dict[str, Any]) -> PackagingInfo:
        self.configure(params)
        raw = data.pc.raw_tensor(params["percentile_low"], params["percentile_high"])
        outputs = (
            TensorInfo(
                id=HEAT,
                axes="cyx",
                channel_names=("centre_score",),
                description="particle-centre score 0..1: a peak of about 1 at each particle centre",
                processing=({"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},),
                data_range=(0.0, 1.0),
            ),
            TensorInfo(
                id=DIAMETER,
                axes="cyx",
                channel_names=("diameter_px",),
                description="particle diameter (px), to be read at the centres of the heat map",
                processing=({"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},),
            ),
        )
        return packaging_info(params, raw, outputs, HERE / "README.md", data.pc)


def _outputs(predict: PredictFn, raw: np.ndarray) -> dict[str, np.ndarray]:
    outputs = predict(raw[None])
    for key in (HEAT, DIAMETER):
        if np.shape(outputs[key]) != (1, *raw.shape):
            raise ValueError(f"the model returned {key} {np.shape(outputs[key])}, expected {(1, *raw.shape)}")
    return outputs


def _pick(scores: dict[str, float]) -> dict[str, float]:
    return {k: float(scores[k]) for k in SCORES if k in scores}
