"""The contract between a use case (``training/<name>/``), the trainer and the packager.

A use case is a class derived from :class:`UseCase`, registered with :func:`register_usecase`.
The trainer calls ``datasets``, ``build_model``, ``loss`` and ``metrics``; the packager calls
``packaging`` and ``evaluate`` (which runs the *packaged* model through emzoo's runtime, so that
the metrics written into a package are those of the package itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

# predict(image: np.ndarray with the input's axes) -> {output id: np.ndarray}
PredictFn = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class TensorInfo:
    """How one package tensor looks (without batch); ``axes`` like ``"cyx"``, ``"czyx"`` or ``"c"``
    (for image-to-value outputs ``"c"`` or ``"ci"``)."""

    id: str
    axes: str
    channel_names: tuple[str, ...]
    description: str = ""
    processing: tuple[dict[str, Any], ...] = ()  # spec 0.5 ops: {"id": ..., "kwargs": {...}}
    data_range: tuple[float | None, float | None] = (None, None)


@dataclass(frozen=True)
class PackagingInfo:
    """Everything a package needs besides weights, test tensors and metrics."""

    name: str
    description: str
    task: str  # e.g. "semantic segmentation", "counting", "denoising"
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    authors: tuple[dict[str, str], ...]  # {"name": ..., "affiliation": ...}
    license: str
    cite: tuple[dict[str, str], ...]  # {"text": ..., "doi": ...} or {"text": ..., "url": ...}
    tags: tuple[str, ...]
    pixel_size: dict[str, float]  # of the training data, per spatial axis letter; {} if uncalibrated
    pixel_unit: str | None  # canonical unit name ("nanometer", "angstrom", ...); None if uncalibrated
    training_data: dict[str, str]  # {"name": ..., "source": ..., "license": ..., "split": ...}
    intended_use: str
    limitations: str
    extra_card_sections: dict[str, str] = field(default_factory=dict)


class UseCase:
    """Base class of a use case; subclasses fill in the data, model, loss and metrics.

    Conventions the trainer relies on: dataset items are ``(input, target)`` float tensors without the
    batch axis; ``metrics`` receives ``postprocess(model output)`` and the target of one validation
    sample as numpy arrays without the batch axis (the same kind of array that the package's
    ``predict`` returns), so that validation and the packaged model are scored alike.
    """

    name: str = ""
    params_file: Path | None = None  # the documented parameters (YAML) of this use case
    # parameter overrides that make ``make_tiny_data`` train in about a second (tests)
    tiny_params: ClassVar[dict[str, Any]] = {}

    def datasets(self, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        """``{"train": Dataset, "val": Dataset, "test": [(image, label), ...]}`` (torch datasets)."""
        raise NotImplementedError

    def check_data(self, data_dir: Path) -> None:
        """Raise :class:`emzoo.errors.InputError` with a clear message before any training starts."""
        raise NotImplementedError

    def build_model(self, params: dict[str, Any]):
        """A fresh ``torch.nn.Module``."""
        raise NotImplementedError

    def architecture(self, params: dict[str, Any]) -> tuple[Path, str, dict[str, Any]]:
        """``(self-contained source file, callable name, kwargs)`` for pytorch_state_dict weights."""
        raise NotImplementedError

    def loss(self, params: dict[str, Any]) -> Callable:
        raise NotImplementedError

    def metrics(self, prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """Validation metrics for one sample (numpy in, floats out); higher or lower is stated in
        ``main_metric``."""
        raise NotImplementedError

    main_metric: tuple[str, str] = ("loss", "min")  # (name, "min" | "max") for early stopping

    def packaging(self, params: dict[str, Any]) -> PackagingInfo:
        raise NotImplementedError

    def sample_input(self, data_dir: Path) -> np.ndarray:
        """A real image (input axes, raw dtype) for test tensors and covers."""
        raise NotImplementedError

    def evaluate(self, predict: PredictFn, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        """Metrics of ``predict`` on the held-out test split and of the classical baseline:
        ``{"dataset_role": "test", "sample_count": n, "metrics": {name: value},
        "baseline": {"name": ..., "metrics": {...}}, "samples": [...]}``."""
        raise NotImplementedError

    # -- additions used by the trainer (emzoo.train) -------------------------------------------------

    def split(self, data_dir: Path, params: dict[str, Any]) -> dict[str, list[str]]:
        """The file names of each role: ``{"train": [...], "val": [...], "test": [...]}`` (written to
        the run's ``config.json``; must be the split that ``datasets`` uses)."""
        raise NotImplementedError

    def check_params(self, params: dict[str, Any]) -> None:
        """Raise :class:`emzoo.errors.UsageError` for parameter values the use case cannot train with
        (e.g. a crop size that is not a multiple of ``2 ** depth``); called before any training."""

    def postprocess(self, output: np.ndarray) -> np.ndarray:
        """The package's postprocessing of one raw model output (e.g. a sigmoid), in numpy."""
        return output

    def package_config(self, params: dict[str, Any]) -> dict[str, Any]:
        """Extra ``config.emzoo`` keys of the package (e.g. how the runtime counts with it)."""
        return {}

    def read_label(self, path: Path) -> Any:
        """The target of one label file, as ``metrics`` takes it (used by ``emzoo evaluate``)."""
        raise NotImplementedError(f"the use case {self.name!r} cannot read label files")

    def make_tiny_data(self, out_dir: Path) -> Path:
        """Write a tiny synthetic data folder that ``check_data`` accepts and return it; with
        ``tiny_params`` one epoch of training on it takes about a second (used by the tests)."""
        raise NotImplementedError


class UNetUseCase(UseCase):
    """A use case whose model is emzoo's 2D :class:`~emzoo.architectures.unet.UNet` (one channel in,
    one out), sized by the ``depth`` and ``features`` parameters."""

    def unet_kwargs(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "in_channels": 1,
            "out_channels": 1,
            "depth": params["depth"],
            "features": params["features"],
            "dims": 2,
        }

    def build_model(self, params: dict[str, Any]):
        from emzoo.architectures.unet import UNet

        return UNet(**self.unet_kwargs(params))

    def architecture(self, params: dict[str, Any]) -> tuple[Path, str, dict[str, Any]]:
        import emzoo.architectures.unet as unet

        return Path(unet.__file__), "UNet", self.unet_kwargs(params)


_USECASES: dict[str, type[UseCase]] = {}


def register_usecase(cls: type[UseCase]) -> type[UseCase]:
    """Class decorator: make a use case known to ``emzoo train --list``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a name")
    _USECASES[cls.name] = cls
    return cls


def registered_usecases() -> dict[str, type[UseCase]]:
    return dict(_USECASES)
