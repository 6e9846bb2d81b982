"""EM image type (modality) classification from patches, with the probability score interpreter (PSI)
telling known types from types the network never saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emzoo.errors import UsageError
from emzoo.packaging.info import PackagingInfo, PredictFn, TensorInfo
from emzoo.train.usecase import UseCase, register_usecase

from . import baseline, data

HERE = Path(__file__).resolve().parent
OUTPUT_ID = "logits"
SAMPLE = "stem_nanoparticles/images/Ru2.jpg"  # a test image: the package's test tensors and cover
DATA_URL = "https://imagej.net/events/isbi-2012-segmentation-challenge"
RAW = TensorInfo(
    id="raw",
    axes="cyx",
    channel_names=("raw",),
    description="an EM image in its own grey levels (any dtype, any size; the network normalises each patch)",
    processing=({"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},),
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _energy(z: np.ndarray) -> np.ndarray:
    """Negative free energy, ``logsumexp(z)``: higher for inputs like the training data."""
    m = z.max(axis=-1)
    return m + np.log(np.exp(z - m[..., None]).sum(axis=-1))


@register_usecase
class EMModality(UseCase):
    """EM image type (ssTEM, HAADF STEM, bright-field STEM, noisy TEM): patch CNN + PSI for unknown types."""

    name = "em_modality"
    params_file = HERE / "params.yaml"
    main_metric = ("accuracy", "max")
    evaluation_metric = ("balanced_accuracy", "max")
    tiny_params = {  # noqa: RUF012  (class-level constant, never mutated)
        "epochs": 1,
        "iterations_per_epoch": 1,
        "batch_size": 2,
        "patch": 32,
        "features": 4,
        "depth": 2,
        "val_patches_per_class": 2,
    }

    # -- data ----------------------------------------------------------------------------------------

    def check_data(self, data_dir: Path) -> None:
        data.check(data_dir)

    def split(self, data_dir: Path, params: dict[str, Any]) -> dict[str, list[str]]:
        return data.split(data_dir)

    def check_params(self, params: dict[str, Any]) -> None:
        super().check_params(params)
        if params["patch"] < 2 ** (params["depth"] + 1):
            raise UsageError(
                f"patch {params['patch']} must be at least 2**(depth + 1) = {2 ** (params['depth'] + 1)}"
            )
        if params["grid"] < 1:
            raise UsageError("grid must be at least 1")
        if not 0 < params["psi_doubt"] <= params["psi_claim"] <= 1:
            raise UsageError("need 0 < psi_doubt <= psi_claim <= 1")

    def datasets(self, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        parts = self.split(data_dir, params)
        length = params["iterations_per_epoch"] * params["batch_size"]
        return {
            "train": data.PatchDataset(
                data.load(data_dir, parts["train"]), params["patch"], length, params["seed"]
            ),
            "val": data.FixedPatches(
                data.load(data_dir, parts["val"]),
                params["patch"],
                params["val_patches_per_class"],
                params["seed"],
            ),
            "test": [(raw[None], k) for _, k, raw in data.load(data_dir, parts["test"])],
        }

    def make_tiny_data(self, out_dir: Path) -> Path:
        return data.make_synthetic(Path(out_dir))

    def training_images(self, data_dir: Path, params: dict[str, Any]):
        for _, _, raw in data.load(data_dir, data.split(data_dir)["train"]):
            yield raw

    def sample_input(self, data_dir: Path) -> np.ndarray:
        test = data.split(data_dir)["test"]
        name = SAMPLE if SAMPLE in test else test[0]
        return np.asarray(next(data.read_plane(Path(data_dir) / name)))[None]

    # -- model, loss, metrics ------------------------------------------------------------------------

    def network_kwargs(self, params: dict[str, Any], grid: int) -> dict[str, Any]:
        return {
            "classes": len(data.CLASSES),
            "features": params["features"],
            "depth": params["depth"],
            "max_features": params["max_features"],
            "patch": params["patch"],
            "grid": grid,
            "dropout": params["dropout"],
        }

    def build_model(self, params: dict[str, Any]):
        """The patch classifier as it trains: patches in, logits out (``grid`` 0)."""
        from .network import ModalityClassifier

        return ModalityClassifier(**self.network_kwargs(params, 0))

    def architecture(self, params: dict[str, Any]) -> tuple[Path, str, dict[str, Any]]:
        return HERE / "network.py", "ModalityClassifier", self.network_kwargs(params, params["grid"])

    def packaged_model(self, model, params: dict[str, Any]):
        """The trained layers with the whole-image grid in front (the same state dict); remembers the
        packaged network for the PSI fit of :meth:`package_config`."""
        from .network import ModalityClassifier

        packaged = ModalityClassifier(**self.network_kwargs(params, params["grid"]))
        packaged.load_state_dict(model.state_dict())
        self._packaged = packaged
        return packaged

    def loss(self, params: dict[str, Any]):
        import torch

        return torch.nn.CrossEntropyLoss(label_smoothing=float(params["label_smoothing"]))

    def metrics(self, prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """``prediction``: the raw logits of one validation patch; ``target``: its class index."""
        return {"accuracy": float(int(np.argmax(prediction)) == int(np.asarray(target)))}

    # -- the PSI, fitted post hoc --------------------------------------------------------------------

    def fit_psi(self, model, data_dir: Path, params: dict[str, Any]):
        """The PSI of the packaged ``model`` (a whole image in, its logits out) fitted on the unit it
        predicts: the logits of whole images (the mean over their grid of patches, not single
        patches, whose logits spread more), of the training and validation images of the known types
        (the validation images are ones the network did not learn from; the test images and the
        unknown types stay out), each in the eight flips and quarter turns that training shows."""
        import torch

        from emzoo.tasks.psi import Psi

        parts = data.split(data_dir)
        logits, labels = [], []
        model = model.eval()
        with torch.no_grad():
            for _, k, raw in data.load(data_dir, parts["train"] + parts["val"]):
                for view in _views(np.asarray(raw, np.float32)):
                    logits.append(model(torch.from_numpy(view)[None, None]).numpy()[0])
                    labels.append(k)
        return Psi.fit(
            np.array(logits),
            np.array(labels),
            data.CLASSES,
            claim=float(params["psi_claim"]),
            doubt=float(params["psi_doubt"]),
        )

    def package_config(self, params: dict[str, Any]) -> dict[str, Any]:
        """``config.emzoo``: the classification output kind and its PSI (fitted here, from the trained
        network that :meth:`packaged_model` built, on the data of :meth:`packaging_for`)."""
        model, data_dir = getattr(self, "_packaged", None), getattr(self, "_data_dir", None)
        if model is None or data_dir is None:
            from emzoo.packaging.export import PackagingError

            raise PackagingError(
                "em_modality fits its PSI from the trained network: package it with package_run"
            )
        self._psi = self.fit_psi(model, data_dir, params)
        return {"output_kind": "classification", "psi": self._psi.to_dict()}

    # -- evaluation ----------------------------------------------------------------------------------

    def evaluate(self, predict: PredictFn, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        """The packaged model on the held-out images of the known classes (accuracy per class and
        balanced) next to the nearest-centroid baseline, and its PSI, maximum softmax and energy on the
        image types it never saw (AUROC unknown vs known)."""
        from emzoo.tasks.ood.score import auroc

        psi = getattr(self, "_psi", None) or self.fit_psi(self._packaged, data_dir, params)
        parts = data.split(data_dir)
        train = data.load(data_dir, parts["train"])
        centroid = baseline.NearestCentroid.fit([a for _, _, a in train], [k for _, k, _ in train])

        def scored(raw: np.ndarray) -> dict[str, Any]:
            z = np.asarray(predict(np.asarray(raw)[None])[OUTPUT_ID], np.float64).reshape(-1)
            s = psi.scores(z[None])[0]
            return {
                "predicted": data.CLASSES[int(np.argmax(z))],
                "verdict": psi.verdict(s),
                "max_psi": float(s.max()),
                "max_softmax": float(_softmax(z).max()),
                "energy": float(_energy(z)),
                "logits": [round(float(v), 4) for v in z],
            }

        samples = []
        for name, k, raw in data.load(data_dir, parts["test"]):
            row = {"name": name, "type": data.CLASSES[k], "known": True, **scored(raw)}
            row["baseline"] = data.CLASSES[centroid.predict(raw)]
            samples.append(row)
        for kind, planes in data.unknown(data_dir).items():
            samples += [{"name": n, "type": kind, "known": False, **scored(a)} for n, a in planes]
        known = [s for s in samples if s["known"]]
        others = [s for s in samples if not s["known"]]
        metrics, base = _accuracies(known, "predicted"), _accuracies(known, "baseline")
        metrics["known_accepted"] = float(np.mean([s["verdict"] == s["type"] for s in known]))
        if others:
            for score in ("max_psi", "max_softmax", "energy"):  # unknown = positive: low score
                metrics[f"auroc_{score}"] = auroc([-s[score] for s in known], [-s[score] for s in others])
            metrics["unknown_rejected"] = float(np.mean([s["verdict"] == "unknown" for s in others]))
        return {
            "dataset_role": "test",
            "dataset_name": "EM image types, held-out images",
            "dataset_source": DATA_URL,
            "sample_count": len(known),
            "unknown_count": len(others),
            "unknown_types": {kind: sum(s["type"] == kind for s in others) for kind in data.UNKNOWN},
            "metrics": metrics,
            "metrics_long": _metrics_long(),
            "baseline": {"name": baseline.NAME, "features": baseline.feature_names(), "metrics": base},
            "samples": samples,
        }

    # -- packaging -----------------------------------------------------------------------------------

    def packaging_for(self, data_dir: Path, params: dict[str, Any]) -> PackagingInfo:
        self._data_dir = Path(data_dir)
        return self.packaging(params)

    def packaging(self, params: dict[str, Any]) -> PackagingInfo:
        from .card import packaging_info

        return packaging_info(params, RAW, OUTPUT_ID, (HERE / "README.md").read_text(encoding="utf-8"))


def _views(image: np.ndarray) -> list[np.ndarray]:
    """The eight flips and quarter turns of a 2D image (contiguous copies)."""
    turns = [np.rot90(image, k) for k in range(4)]
    return [np.ascontiguousarray(v) for t in turns for v in (t, t[:, ::-1])]


def _accuracies(samples: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Accuracy overall, per class and balanced (the mean over the classes with test images)."""
    per = {}
    for name in data.CLASSES:
        own = [s for s in samples if s["type"] == name]
        if own:
            per[f"accuracy_{name}"] = float(np.mean([s[key] == name for s in own]))
    return {
        "accuracy": float(np.mean([s[key] == s["type"] for s in samples])),
        "balanced_accuracy": float(np.mean(list(per.values()))),
        **per,
    }


def _metrics_long() -> dict[str, str]:
    long = {
        "accuracy": "share of the held-out images of the known types whose argmax class is right",
        "balanced_accuracy": "mean over the known types of their accuracy",
        "known_accepted": "share of the held-out known-type images whose PSI verdict is their own type",
        "auroc_max_psi": "AUROC unknown vs known types of the largest PSI (low: unknown)",
        "auroc_max_softmax": "AUROC unknown vs known types of the largest softmax probability",
        "auroc_energy": "AUROC unknown vs known types of the energy score logsumexp(logits)",
        "unknown_rejected": "share of the images of the unknown types whose PSI verdict is unknown",
    }
    long.update(
        {f"accuracy_{c}": f"accuracy on the held-out {data.LONG_NAMES[c]} images" for c in data.CLASSES}
    )
    return long
