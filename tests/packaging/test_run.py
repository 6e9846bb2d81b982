"""``package_run`` and ``emzoo package RUN_DIR``: a training run folder with a use case from the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emzoo.packaging import BuildOptions, PackagingError
from emzoo.train import usecase as usecase_registry
from emzoo.train.run import package_run
from emzoo.train.usecase import UseCase
from tests.packaging.conftest import UNET_KWARGS, UNET_SOURCE, synthetic_em, torch, unet_info


class TinyMembranes(UseCase):
    """A use case defined by the test: the shared U-Net on synthetic 'membrane' images."""

    name = "packaging_test_tiny_membranes"

    def build_model(self, params: dict[str, Any]):
        from emzoo.architectures.unet import UNet

        return UNet(depth=params["depth"], features=params["features"])

    def architecture(self, params):
        return UNET_SOURCE, "UNet", {"depth": params["depth"], "features": params["features"]}

    def packaging(self, params):
        return unet_info(name="Tiny membrane U-Net")

    def sample_input(self, data_dir: Path) -> np.ndarray:
        from emzoo.io import read_image

        return np.asarray(read_image(data_dir / "image" / "2.png").data)[None]

    def evaluate(self, predict, data_dir: Path, params):
        from emzoo.io import read_image

        probability = predict(np.asarray(read_image(data_dir / "image" / "2.png").data)[None])["membrane"]
        assert probability.shape == (1, 96, 96)
        return {
            "dataset_role": "test",
            "sample_count": 1,
            "metrics": {"mean_probability": float(probability.mean())},
            "baseline": {"name": "constant 0.5", "metrics": {"mean_probability": 0.5}},
        }


@pytest.fixture(autouse=True)
def _registered(monkeypatch):
    """The test's use case is in the registry during each test only (so that other tests, which
    collect every registered use case, never see it)."""
    monkeypatch.setitem(usecase_registry._USECASES, TinyMembranes.name, TinyMembranes)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """What `emzoo train` leaves: config.json, weights/best.pt, metrics.json (+ the data folder)."""
    from PIL import Image as PILImage

    root = tmp_path_factory.mktemp("run")
    data = root / "data"
    (data / "image").mkdir(parents=True)
    (data / "label").mkdir()
    for i in range(3):
        image = synthetic_em(96, seed=i)
        PILImage.fromarray(image).save(data / "image" / f"{i}.png")
        PILImage.fromarray(((image > 100) * 255).astype(np.uint8)).save(data / "label" / f"{i}.png")
    run = root / "run"
    (run / "weights").mkdir(parents=True)
    params = {
        "depth": UNET_KWARGS["depth"],
        "features": UNET_KWARGS["features"],
        "epochs": 2,
        "batch_size": 2,
        "lr": 1e-3,
    }
    torch.manual_seed(0)
    model = TinyMembranes().build_model(params)
    torch.save(model.state_dict(), run / "weights" / "best.pt")
    (run / "config.json").write_text(
        json.dumps(
            {
                "use_case": TinyMembranes.name,
                "params": params,
                "split": {"train": ["0.png", "1.png"], "val": [], "test": ["2.png"]},
                "data_dir": str(data),
                "status": "finished",
            }
        )
    )
    (run / "metrics.json").write_text(
        json.dumps({"dataset_role": "validation", "epoch": 1, "sample_count": 1, "metrics": {"loss": 0.5}})
    )
    return run


def test_package_run(run_dir, tmp_path):
    from bioimageio.spec import load_description

    out = package_run(
        run_dir, tmp_path / "tiny.zip", options=BuildOptions(test_size=64, test_with_bioimageio=False)
    )
    descr = load_description(out)
    assert descr.name == "Tiny membrane U-Net"
    assert descr.config.bioimageio.evaluations[0].metrics == ["mean_probability"]
    emzoo = descr.config.model_extra["emzoo"]
    assert emzoo["usecase"] == TinyMembranes.name and emzoo["params"]["depth"] == 2
    stats = emzoo["training_data"]["intensity"]
    assert stats["n_images"] == 2 and "2 raw training images" in stats["source"]
    assert descr.config.bioimageio.training.training_epochs == 2
    assert descr.weights.pytorch_state_dict.architecture.kwargs == {"depth": 2, "features": 4}


def test_package_run_errors(run_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PackagingError, match=r"is not a training run folder: it has no config\.json"):
        package_run(empty, tmp_path / "x.zip")
    with pytest.raises(
        PackagingError, match=r"data folder '/nowhere' does not exist here: pass the data with data_dir=DIR"
    ):
        package_run(run_dir, tmp_path / "x.zip", data_dir="/nowhere")
    assert not (tmp_path / "x.zip").exists()


def test_cli_package(run_dir, tmp_path):
    from click.testing import CliRunner

    from emzoo.cli import main

    out = tmp_path / "zoo_models" / "tiny"
    args = [
        "package",
        str(run_dir),
        "-o",
        str(out),
        "--test-size",
        "64",
        "--weights",
        "onnx",
        "--weights",
        "torchscript",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    assert (out / "rdf.yaml").is_file() and (out / "weights.onnx").is_file()
    assert not (out / "weights.pt").exists()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1
    assert "already exists: choose another output or overwrite it (--overwrite)" in again.output
    missing = CliRunner().invoke(main, ["package", str(tmp_path / "nothing"), "-o", str(tmp_path / "m.zip")])
    assert missing.exit_code == 1 and "is not a training run folder" in missing.output
