"""TEMPLATE: copy this folder to ``training/<your_use_case>/`` and fill in every ``TODO``.

The folder ``_template`` itself is never imported by ``emzoo train`` (names starting with ``_`` are
skipped). See README.md for what each method must do and ``training/membrane_segmentation/`` for a
complete example.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emzoo.train.usecase import PackagingInfo, PredictFn, UNetUseCase, register_usecase

HERE = Path(__file__).resolve().parent


@register_usecase
class MyUseCase(UNetUseCase):
    """TODO: one line that `emzoo train --list` shows."""

    name = "my_use_case"  # TODO: the command-line name (the folder name is a good choice)
    params_file = HERE / "params.yaml"
    main_metric = ("loss", "min")  # TODO: e.g. ("dice", "max")
    tiny_params = {"epochs": 1, "iterations_per_epoch": 1, "batch_size": 2, "crop_size": 32}  # noqa: RUF012

    # -- data ----------------------------------------------------------------------------------------

    def check_data(self, data_dir: Path) -> None:
        # TODO: e.g. emzoo.train.data.check_pairs(emzoo.train.data.find_pairs(data_dir))
        raise NotImplementedError

    def split(self, data_dir: Path, params: dict[str, Any]) -> dict[str, list[str]]:
        # TODO: e.g. emzoo.train.split.block_split(names, val=3, test=5); explain it in README.md
        raise NotImplementedError

    def datasets(self, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        # TODO: {"train": PairDataset(..., augmentation=Augmentation(...), length=...),
        #        "val": PairDataset(...), "test": [(raw image, target), ...]}
        raise NotImplementedError

    def make_tiny_data(self, out_dir: Path) -> Path:
        # TODO: write a few tiny synthetic images in the layout check_data expects; return the folder
        raise NotImplementedError

    def sample_input(self, data_dir: Path) -> np.ndarray:
        # TODO: one raw test image with the input's axes (e.g. "cyx")
        raise NotImplementedError

    # -- model, loss, metrics ------------------------------------------------------------------------

    # build_model and architecture come from UNetUseCase: a 2D U-Net with one channel in and one out,
    # sized by the "depth" and "features" parameters. For another network derive from UseCase and
    # write both (see README.md, step 3).

    def loss(self, params: dict[str, Any]):
        # TODO: a callable (output batch, target batch) -> scalar tensor
        raise NotImplementedError

    def postprocess(self, output: np.ndarray) -> np.ndarray:
        # TODO: the package's postprocessing in numpy (e.g. a sigmoid); identity if there is none
        return output

    def metrics(self, prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
        # TODO: {name: float} from emzoo.metrics for one validation sample
        raise NotImplementedError

    # -- packaging -----------------------------------------------------------------------------------

    def packaging(self, params: dict[str, Any]) -> PackagingInfo:
        # TODO: name, description, task, inputs/outputs with processing, authors, license, cite,
        #       tags, pixel size and unit, training data, intended use, limitations
        raise NotImplementedError

    def evaluate(self, predict: PredictFn, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
        # TODO: predict(image) on every test image and a classical baseline, with the same metrics
        raise NotImplementedError
