"""The contract between a use case (``training/<name>/``), the trainer and the packager.

A use case is a class derived from :class:`UseCase`, registered with :func:`register_usecase`.
The trainer calls ``check_params``, ``datasets``, ``build_model``, ``loss`` and ``metrics``; the
packager calls ``packaging``, ``sample_input``, ``training_images`` and ``evaluate`` (which runs the
*packaged* model through emzoo's runtime, so that the metrics written into a package are those of the
package itself). The tensors a package declares (:class:`~emzoo.packaging.info.TensorInfo`, with their
processing) are declared once and also normalise the training data
(:meth:`~emzoo.packaging.info.TensorInfo.apply_processing`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from emzoo.errors import UsageError, literal
from emzoo.package.spec import SizeRule
from emzoo.packaging.info import PackagingInfo, PredictFn


class NotWrittenError(UsageError, NotImplementedError):
    """A contract method the use case has not written yet (e.g. a copied template left unfilled).

    A :class:`~emzoo.errors.UsageError` (exit code 2): the fix is code the user writes, as with a
    wrong option, and nothing ran or broke; it is also a ``NotImplementedError``, so that callers of
    optional methods (``training_images``) fall back as before.
    """


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

    def not_written(self, method: str) -> NotWrittenError:
        """The error of a contract method that this use case does not implement (raise it): one line
        that names the method and the file to write it in (exit code 2 in the CLI)."""
        who = self.name or type(self).__name__
        try:
            where = f": fill it in {literal(inspect.getfile(type(self)))}"
        except (TypeError, OSError):
            where = ""
        return NotWrittenError(f"use case {who!r} does not implement {method}(){where}")

    def datasets(self, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        """``{"train": Dataset, "val": Dataset, "test": [(image, label), ...]}`` (torch datasets)."""
        raise self.not_written("datasets")

    def check_data(self, data_dir: Path) -> None:
        """Raise :class:`emzoo.errors.InputError` with a clear message before any training starts."""
        raise self.not_written("check_data")

    def build_model(self, params: dict[str, Any]):
        """A fresh ``torch.nn.Module``."""
        raise self.not_written("build_model")

    def architecture(self, params: dict[str, Any]) -> tuple[Path, str, dict[str, Any]]:
        """``(self-contained source file, callable name, kwargs)`` for pytorch_state_dict weights."""
        raise self.not_written("architecture")

    def loss(self, params: dict[str, Any]) -> Callable:
        raise self.not_written("loss")

    def metrics(self, prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """Validation metrics for one sample (numpy in, floats out); higher or lower is stated in
        ``main_metric``."""
        raise self.not_written("metrics")

    main_metric: tuple[str, str] = ("loss", "min")  # (name, "min" | "max") for early stopping
    # (name, "min" | "max") of the evaluate() metric that the package is judged by against its classical
    # baseline; None: main_metric when evaluate() reports it, else the first metric (preferring a
    # "..._mean") whose name says which way is better (emzoo.metrics.direction)
    evaluation_metric: tuple[str, str] | None = None

    def packaging(self, params: dict[str, Any]) -> PackagingInfo:
        raise self.not_written("packaging")

    def packaging_for(self, data_dir: Path, params: dict[str, Any]) -> PackagingInfo:
        """The package's metadata for a run on ``data_dir`` (what ``package_run`` uses): by default
        :meth:`packaging`; a use case that trains on several kinds of data folders says which one."""
        return self.packaging(params)

    def sample_input(self, data_dir: Path) -> np.ndarray:
        """A real image (input axes, raw dtype) for test tensors and covers."""
        raise self.not_written("sample_input")

    def training_images(self, data_dir: Path, params: dict[str, Any]) -> Iterable[np.ndarray]:
        """The raw training images (raw dtype, as read), from which the packager computes the intensity
        statistics that the runtime compares new images with (``config.emzoo.training_data``).

        Without it (this base raises :class:`NotImplementedError`) the packager reads the files of the
        run's training split from an image folder under ``data_dir``, and failing that uses the
        sample image alone.
        """
        raise self.not_written("training_images")

    def intensity_group(self, image: np.ndarray) -> str | None:
        """The kind of contrast of one raw training image (e.g. ``"haadf"``, ``"bright_field"``), for
        data sets that mix kinds whose pooled statistics describe neither: the packager then records
        the statistics of each kind too (``config.emzoo.training_data.intensity.groups``). None (this
        base): one kind."""
        return None

    def evaluate(self, predict: PredictFn, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        """Metrics of ``predict`` on the held-out test split and of the classical baseline:
        ``{"dataset_role": "test", "sample_count": n, "metrics": {name: value},
        "baseline": {"name": ..., "metrics": {...}}, "samples": [...]}``."""
        raise self.not_written("evaluate")

    # -- additions used by the trainer (emzoo.train) -------------------------------------------------

    def split(self, data_dir: Path, params: dict[str, Any]) -> dict[str, list[str]]:
        """The file names of each role: ``{"train": [...], "val": [...], "test": [...]}`` (written to
        the run's ``config.json``; must be the split that ``datasets`` uses)."""
        raise self.not_written("split")

    def check_params(self, params: dict[str, Any]) -> None:
        """Raise :class:`emzoo.errors.UsageError` for parameter values the use case cannot train with
        (e.g. a crop size that is not a multiple of ``2 ** depth``); called before any training.
        Subclasses that add checks call ``super().check_params(params)`` first."""

    def postprocess(self, output: np.ndarray) -> np.ndarray:
        """The package's postprocessing of one raw model output (e.g. a sigmoid), in numpy."""
        return output

    def calibrate(self, params: dict[str, Any], validation: dict[str, float]) -> dict[str, Any]:
        """Parameter values chosen at packaging time from the best epoch's validation metrics (e.g. a
        score threshold); they replace the run's values in what the package is built from."""
        return {}

    def calibrate_package(self, predict: PredictFn, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        """Parameter values chosen with the *packaged* model (``predict`` as in :meth:`evaluate`) on
        the validation images, before the test evaluation (e.g. a score threshold on whole images
        rather than on training's validation windows); they replace ``params`` in the package's config
        and its evaluation. Default: none."""
        return {}

    def package_config(self, params: dict[str, Any]) -> dict[str, Any]:
        """Extra ``config.emzoo`` keys of the package (e.g. how the runtime counts with it)."""
        return {}

    def packaged_model(self, model, params: dict[str, Any]):
        """The network the package holds, made from the trained ``model`` (default: ``model`` itself).
        :meth:`architecture` builds it and ``model``'s state dict loads into it: e.g. the same layers
        with the input's normalisation inside, so that the package returns the input's grey levels."""
        return model

    def read_label(self, path: Path) -> Any:
        """The target of one label file, as ``metrics`` takes it (used by ``emzoo evaluate``)."""
        raise NotImplementedError(f"the use case {self.name!r} cannot read label files")

    def make_tiny_data(self, out_dir: Path) -> Path:
        """Write a tiny synthetic data folder that ``check_data`` accepts and return it; with
        ``tiny_params`` one epoch of training on it takes about a second (used by the tests)."""
        raise self.not_written("make_tiny_data")


class UNetUseCase(UseCase):
    """A use case whose model is emzoo's 2D :class:`~emzoo.architectures.unet.UNet` (one channel in,
    one out), sized by the ``depth`` and ``features`` parameters.

    The U-Net takes sizes that are multiples of ``2 ** depth`` (:meth:`size_rule`); ``check_params``
    checks the parameters named in ``size_params`` (crop sizes) against it.
    """

    size_params: ClassVar[tuple[str, ...]] = ("crop_size",)  # parameters that must fit size_rule

    def size_rule(self, params: dict[str, Any]) -> SizeRule:
        """The sizes (px per spatial axis) the U-Net takes: multiples of ``2 ** depth``."""
        multiple = 2 ** params["depth"]
        return SizeRule(min=multiple, step=multiple)

    def check_params(self, params: dict[str, Any]) -> None:
        super().check_params(params)
        rule = self.size_rule(params)
        for key in self.size_params:
            if not rule.accepts(params[key]):
                raise UsageError(
                    f"{key} {params[key]} must be a multiple of 2**depth = {rule.step} "
                    f"(depth {params['depth']}); e.g. {rule.valid_below(params[key])}"
                )

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
