"""TEMPLATE: copy this folder to ``training/<your_use_case>/`` and fill in every ``TODO``.

The folder ``_template`` itself is never imported by ``emzoo train`` (names starting with ``_`` are
skipped). See README.md for what each method must do and ``training/membrane_segmentation/`` for a
complete example. Every method left as it is raises ``NotImplementedError`` naming itself (``emzoo
train`` prints it as one line that names the method and this file, exit code 2).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.packaging.info import PackagingInfo, PredictFn, TensorInfo
from emzoo.train.usecase import UNetUseCase, register_usecase

HERE = Path(__file__).resolve().parent

# TODO: the package's input, declared once. Its processing (bioimage.io spec 0.5 ops, ending in an
# explicit ensure_dtype float32) is what the package declares AND what training normalises with:
# call RAW.apply_processing(image) in datasets() (move RAW to data.py when you add one).
RAW = TensorInfo(
    id="raw",
    axes="cyx",
    channel_names=("raw",),
    description="TODO: what the input image is (modality, channels, pixel size)",
    processing=(
        {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
        {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["channel", "y", "x"], "eps": 1e-6}},
        {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
    ),
)


@register_usecase
class MyUseCase(UNetUseCase):
    """TODO: one line that `emzoo train --list` shows."""

    name = "my_use_case"  # TODO: the command-line name (the folder name is a good choice)
    params_file = HERE / "params.yaml"
    main_metric = ("loss", "min")  # TODO: e.g. ("dice", "max")
    # TODO: the evaluate() metric compared with the classical baseline, if not main_metric
    evaluation_metric = None  # e.g. ("psnr_mean", "max")
    tiny_params = {"epochs": 1, "iterations_per_epoch": 1, "batch_size": 2, "crop_size": 32}  # noqa: RUF012
    size_params = ("crop_size",)  # TODO: every size parameter that must be a multiple of 2**depth

    # -- data ----------------------------------------------------------------------------------------

    def check_data(self, data_dir: Path) -> None:
        # TODO: e.g. emzoo.train.data.check_pairs(emzoo.train.data.find_pairs(data_dir))
        raise self.not_written("check_data")

    def check_params(self, params: dict[str, Any]) -> None:
        super().check_params(params)  # the size_params are multiples of 2**depth (UNetUseCase)
        # TODO: raise emzoo.errors.UsageError for other values the use case cannot train with

    def split(self, data_dir: Path, params: dict[str, Any]) -> dict[str, list[str]]:
        # TODO: e.g. emzoo.train.split.block_split(names, val=3, test=5); explain it in README.md
        raise self.not_written("split")

    def datasets(self, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        # TODO: {"train": PairDataset([RAW.apply_processing(a) for a in images], ..., augmentation=...),
        #        "val": PairDataset(...), "test": [(raw image, target), ...]}
        raise self.not_written("datasets")

    def make_tiny_data(self, out_dir: Path) -> Path:
        # TODO: write a few tiny synthetic images in the layout check_data expects; return the folder
        raise self.not_written("make_tiny_data")

    def sample_input(self, data_dir: Path) -> np.ndarray:
        # TODO: one raw test image with the input's axes (e.g. "cyx")
        raise self.not_written("sample_input")

    def training_images(self, data_dir: Path, params: dict[str, Any]) -> Iterable[np.ndarray]:
        # TODO: yield the raw training images (raw dtype) for the package's intensity statistics; or
        #       delete this method to let the packager read the training split's files itself
        raise self.not_written("training_images")

    # -- model, loss, metrics ------------------------------------------------------------------------

    # build_model and architecture come from UNetUseCase: a 2D U-Net with one channel in and one out,
    # sized by the "depth" and "features" parameters. For another network derive from UseCase and
    # write both (see README.md, step 3).

    def loss(self, params: dict[str, Any]):
        # TODO: a callable (output batch, target batch) -> scalar tensor
        raise self.not_written("loss")

    def postprocess(self, output: np.ndarray) -> np.ndarray:
        # TODO: the package's postprocessing in numpy (e.g. a sigmoid); identity if there is none
        return output

    def metrics(self, prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
        # TODO: {name: float} from emzoo.metrics for one validation sample
        raise self.not_written("metrics")

    # -- packaging -----------------------------------------------------------------------------------

    def packaging(self, params: dict[str, Any]) -> PackagingInfo:
        # TODO: PackagingInfo(name, description, task, inputs=(RAW,), outputs=(TensorInfo(...),),
        #       authors, license, cite, tags, pixel size and unit, training data, intended use,
        #       limitations)
        raise self.not_written("packaging")

    def evaluate(self, predict: PredictFn, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        # TODO: predict(image) on every test image and a classical baseline, with the same metrics
        raise self.not_written("evaluate")
