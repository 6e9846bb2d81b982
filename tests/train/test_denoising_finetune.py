"""The denoiser in grey levels and its fine-tuning route: the packaged network normalises inside
itself (grey levels in and out, bioimageio.core agreeing), ``emzoo predict --output-dtype input``,
``emzoo train denoising --init PACKAGE --minutes M`` on a plain folder holding one image."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from emzoo.cli import main
from emzoo.errors import InputError, UsageError
from emzoo.io import read_image
from emzoo.train.discovery import get_usecase
from emzoo.train.params import load_param_file, resolve_params
from emzoo.train.trainer import train
from tests.train.usecases import sibling

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def uc():
    return get_usecase("denoising")


@pytest.fixture(scope="module")
def modules(uc):
    return tuple(sibling(uc, m) for m in ("data", "folder", "network"))


@pytest.fixture(scope="module")
def tiny_words(uc):
    return {**uc.tiny_params, "minutes": 0}


@pytest.fixture(scope="module")
def package(uc, tiny_words, tmp_path_factory):
    """A tiny denoiser trained one step on the synthetic shared layout and packaged as users do."""
    from emzoo.package.spec import Tolerance
    from emzoo.packaging import BuildOptions
    from emzoo.train.run import package_run

    base = tmp_path_factory.mktemp("greylevels")
    data_dir = uc.make_tiny_data(base / "data")
    train(uc, data_dir, base / "run", overrides=tiny_words, progress=False)
    options = BuildOptions(test_size=64, test_with_bioimageio=False, reproducibility=Tolerance(atol=1e-9))
    return data_dir, package_run(base / "run", base / "denoiser.zip", options=options)


@pytest.fixture
def one_image(package, tmp_path):
    """A plain folder holding one noisy image (64x64 uint8)."""
    data_dir, _ = package
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(data_dir / "sem_denoising" / "BSE_50sigma_noisy.jpg", folder / "noisy.jpg")
    return folder


def emzoo(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "emzoo", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    return proc


# -- the network and the package ---------------------------------------------------------------------


def test_packaged_network_is_the_unet_between_a_normalisation_and_its_inverse(modules):
    from emzoo.architectures.unet import UNet

    data, _, network = modules
    torch.manual_seed(0)
    unet = UNet(depth=2, features=4).eval()
    packaged = network.GreyLevelUNet(depth=2, features=4).eval()
    assert list(packaged.state_dict()) == list(unet.state_dict())  # the same weights load into both
    packaged.load_state_dict(unet.state_dict())
    assert packaged.eps == data.EPS
    x = np.random.default_rng(0).normal(30000, 3000, (2, 1, 48, 40)).astype(np.float32)
    with torch.no_grad():
        ours = packaged(torch.from_numpy(x)).numpy()
        for i in range(2):
            z = torch.from_numpy(data.normalise(x[i])[None])
            expected = unet(z).numpy()[0] * (x[i].std(dtype=np.float64) + data.EPS) + x[i].mean(
                dtype=np.float64
            )
            np.testing.assert_allclose(ours[i], expected, rtol=1e-5, atol=0.05)


def test_package_declares_grey_levels(package):
    from emzoo.package.load import open_model

    _, path = package
    spec = open_model(path).spec
    assert [op.id for op in spec.inputs[0].processing] == ["ensure_dtype"]
    assert [op.id for op in spec.outputs[0].processing] == ["ensure_dtype"]
    assert spec.weights["pytorch_state_dict"].architecture.callable == "GreyLevelUNet"


@pytest.mark.parametrize(
    "name", ["sem_denoising/BSE_25sigma_noisy.jpg", "noisy_tem/noisy_patches_2x2/0_0.tif"]
)
def test_outputs_are_in_the_inputs_grey_levels(package, name):
    from emzoo.runtime.predictor import Predictor

    data_dir, path = package
    x = np.asarray(read_image(data_dir / name).data).astype(np.float64)
    out = Predictor(path, device="cpu").predict({"raw": read_image(data_dir / name)})["denoised"]
    y = np.asarray(out.data, np.float64)
    assert np.asarray(out.data).dtype == np.float32 and y.shape == x.shape
    assert abs(y.mean() - x.mean()) < x.std()  # grey levels (uint8 ~100, uint16 ~30000), not mean 0
    assert x.min() - x.std() < y.min() and y.max() < x.max() + x.std()


def test_bioimageio_core_predicts_what_emzoo_predicts(package):
    """On a whole image of a valid size, as bioimageio.core's test_model runs it (no halo padding:
    bioimageio.core pads a sample by the halo otherwise, which enters the in-network statistics)."""
    from bioimageio.spec import load_description

    from emzoo.checks.core import run_core_test
    from emzoo.runtime.predictor import Predictor
    from tests.conformance import core

    data_dir, path = package
    ok, summary = run_core_test(path, "onnx")
    assert ok, summary
    image = np.asarray(read_image(data_dir / "sem_denoising" / "BSE_50sigma_noisy.jpg").data)
    theirs = core.predict(
        load_description(path), {"raw": image[None, None]}, weight_format="onnx", mode="test"
    )
    ours = Predictor(path, device="cpu", weight_format="onnx").run({"raw": image[None, None]})
    np.testing.assert_allclose(ours["denoised"], np.asarray(theirs["denoised"]), rtol=1e-4, atol=1e-3)
    assert 20 < float(np.mean(ours["denoised"])) < 235  # grey levels of a uint8 image


def test_output_dtype_input_casts_back_with_rounding_and_clipping(package, tmp_path):
    data_dir, path = package
    inputs = [
        data_dir / "sem_denoising" / "BSE_25sigma_noisy.jpg",
        data_dir / "noisy_tem" / "noisy_patches_2x2",
    ]
    emzoo("predict", path, *inputs, "-o", tmp_path / "float", "-q")
    emzoo("predict", path, *inputs, "-o", tmp_path / "cast", "-q", "--output-dtype", "input")
    for stem, dtype in [
        ("BSE_25sigma_noisy_denoised.tif", np.uint8),
        ("0_0_denoised.tif", np.uint16),
    ]:
        plain = np.asarray(read_image(tmp_path / "float" / stem).data)
        cast = np.asarray(read_image(tmp_path / "cast" / stem).data)
        assert plain.dtype == np.float32 and cast.dtype == dtype
        info = np.iinfo(dtype)
        np.testing.assert_array_equal(cast, np.clip(np.rint(plain), info.min, info.max).astype(dtype))


def test_output_dtype_is_refused_with_streaming(package, tmp_path):
    data_dir, path = package
    result = CliRunner().invoke(
        main,
        [
            "predict",
            str(path),
            str(data_dir / "noisy_tem"),
            "-o",
            str(tmp_path),
            "--output-dtype",
            "input",
            "--stream",
        ],
    )
    assert result.exit_code == 2 and "--output-dtype input casts outputs in memory" in result.output


# -- fine-tuning on a folder of one image -----------------------------------------------------------------


def test_one_image_is_split_into_a_training_part_and_a_held_out_strip(uc, modules, one_image, tiny_words):
    data = modules[0]
    params = resolve_params(load_param_file(uc.params_file), tiny_words)
    assert uc.split(one_image, params) == {
        "train": ["noisy.jpg[rows 0-56]"],
        "val": ["noisy.jpg[rows 56-64]"],  # 10% of 64 rows, at least 2 x 2**depth, a multiple of 2**depth
        "test": [],
    }
    sets = uc.datasets(one_image, params)
    # the strip in 32-px pieces, each with several fixed masks
    assert len(sets["val"]) == 2 * data.MAX_VAL_MASKS and sets["val"][0][0].shape == (1, 8, 32)
    x, y = sets["train"][0]
    assert x.shape == (1, 32, 32) and y.shape == (2, 32, 32)
    with pytest.raises(InputError, match="too small for training pieces of patch_size 96"):
        uc.split(one_image, {**params, "patch_size": 96})


def test_init_and_a_time_budget(uc, package, one_image, tiny_words, tmp_path):
    """--init starts from the package's weights (a vanishing learning rate keeps them), --minutes
    stops the run on time (status time_limit) and --resume goes on."""
    _, path = package
    words = {**tiny_words, "epochs": 10_000, "lr": 1e-12}
    start = time.perf_counter()
    result = train(uc, one_image, tmp_path / "run", overrides=words, minutes=0.1, init=path, progress=False)
    assert result.status == "time_limit" and 1 <= result.epochs_completed < 10_000
    assert time.perf_counter() - start < 6 + 30  # the budget, plus one step and validation on a busy CPU
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["status"] == "time_limit" and config["init"]["package"] == str(path)
    assert config["params"]["minutes"] == 0.1
    trained = torch.load(tmp_path / "run" / "weights" / "best.pt", weights_only=True)
    from emzoo.package.load import open_model

    package_ = open_model(path)
    start_weights = torch.load(package_.file("weights.pt"), weights_only=True)
    for name, tensor in start_weights.items():
        if "running" not in name and tensor.is_floating_point():  # batch-norm statistics do move
            torch.testing.assert_close(trained[name], tensor, rtol=0, atol=1e-6)
    resumed = train(uc, None, tmp_path / "run", resume=True, minutes=0.05, progress=False)
    assert resumed.status == "time_limit" and resumed.epochs_completed > result.epochs_completed


def test_init_refuses_another_network_in_one_line(package, one_image, tmp_path):
    _, path = package
    args = ["train", "denoising", "--data", one_image, "--out", tmp_path / "run", "--init", path]
    args += ["--set", "depth=2", "features=8", "patch_size=32", "val_crop=32", "--minutes", "0.1"]
    result = CliRunner().invoke(main, [str(a) for a in args])
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "--init" in lines[0] and "GreyLevelUNet(" in lines[0] and "is not this run's" in lines[0]
    assert "(8, 1, 3, 3) here" in lines[0] and "--set depth=" in lines[0]
    assert not (tmp_path / "run" / "weights").exists()


def test_init_and_resume_exclude_each_other(uc, package, one_image, tmp_path):
    _, path = package
    with pytest.raises(UsageError, match="leave out init or resume=True"):
        train(uc, one_image, tmp_path / "run", init=path, resume=True, progress=False)


def test_a_folder_run_packages_with_a_self_supervised_evaluation(
    uc, package, one_image, tiny_words, tmp_path
):
    from emzoo.package.load import open_model
    from emzoo.package.spec import Tolerance
    from emzoo.packaging import BuildOptions
    from emzoo.train.run import package_run

    _, path = package
    train(uc, one_image, tmp_path / "run", overrides=tiny_words, init=path, progress=False)
    options = BuildOptions(test_size=64, test_with_bioimageio=False, reproducibility=Tolerance(atol=1e-9))
    spec = open_model(package_run(tmp_path / "run", tmp_path / "mine.zip", options=options)).spec
    evaluation = spec.emzoo["evaluation"]
    assert evaluation["dataset_role"] == "validation" and evaluation["sample_count"] == 1
    assert set(evaluation["metrics"]) == {"masked_mse"} and "masked_mse" in evaluation["baseline"]["metrics"]
    noisy = evaluation["other_baselines"]["noisy input (no denoising)"]["masked_mse"]
    assert evaluation["baseline"]["metrics"]["masked_mse"] < noisy  # non-local means denoises
    card = open_model(tmp_path / "mine.zip").file("README.md").read_text()
    assert "1 noisy image(s) of the folder 'mine'" in card and f"--init {path}" in card.replace("\n", " ")


def test_the_folder_leaves_out_what_emzoo_wrote_and_takes_slices_of_volumes(modules, one_image):
    import tifffile

    from emzoo.io import write_image
    from emzoo.io.meta import ImageMeta

    _, folder, _ = modules
    write_image(one_image / "noisy_denoised.tif", np.zeros((64, 64), np.float32), ImageMeta("yx"))
    run = one_image / "runs" / "a"
    (run / "weights").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    shutil.copy(one_image / "noisy.jpg", run / "sample.jpg")
    tifffile.imwrite(one_image / "stack.tif", np.zeros((40, 64, 64), np.uint16))
    names = [p.name for p in folder.planes(one_image)]
    assert names[0] == "noisy.jpg" and len(names) == 1 + folder.MAX_SLICES
    assert names[1] == "stack.tif[z 0]" and names[-1] == "stack.tif[z 39]"
    assert folder.read_plane(folder.planes(one_image)[2]).shape == (64, 64)
