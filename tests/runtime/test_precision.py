"""``--precision``: int8 by static quantization (cached once per model, close to fp32, refused beyond a
package's declared deviation); bf16/fp16 refused on CPU with the reason; the CLI's one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from emzoo.cli import main
from emzoo.errors import UsageError
from emzoo.io import Image, ImageMeta
from emzoo.runtime.predictor import Predictor
from emzoo.runtime.settings import DeviceSpec
from tests.tiny_packages import tiny_info

pytest.importorskip("onnxruntime.quantization")

INT8 = DeviceSpec.parse("cpu", precision="int8")


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """A cache of this test's own, so that what it quantizes is not found quantized already."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("EMZOO_CACHE_DIR", str(folder))
    return folder


def _image(seed: int = 1, size: int = 150) -> Image:
    data = np.random.default_rng(seed).integers(0, 255, (size, size)).astype(np.uint8)
    return Image(data, ImageMeta(axes="yx"))


def test_int8_runs_close_to_fp32_and_is_quantized_once(tiny_unet2d, own_cache):
    first = Predictor(tiny_unet2d, device=INT8)
    assert first.precision.precision == "int8" and not first.precision.cached
    assert first.precision.tiles == 1 and "test input" in first.precision.calibration
    (model,) = (own_cache / "precision").glob("int8-*.onnx")
    stamp = model.stat().st_mtime_ns
    assert first.backend.path == str(model)

    second = Predictor(tiny_unet2d, device=INT8)
    assert second.precision.cached and "cached" in second.precision.note()
    assert model.stat().st_mtime_ns == stamp  # not quantized again
    assert len(list((own_cache / "precision").glob("int8-*.onnx"))) == 1

    fp32 = Predictor(tiny_unet2d, device="cpu")
    assert fp32.precision.precision == "fp32"
    image = _image()
    low = second.predict(image)["prob"].data
    ref = fp32.predict(image)["prob"].data
    assert low.shape == ref.shape and low.dtype == ref.dtype
    assert float(np.abs(low - ref).max()) < 0.05
    assert float(np.abs(low - ref).mean()) < 0.01
    measured = second.precision.deviation["prob"]
    assert 0 < measured["max_abs"] < 0.05 and measured["mean_abs"] <= measured["max_abs"]


def test_calibration_on_images_is_its_own_cache_entry(tiny_unet2d, own_cache, tmp_path):
    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(2):
        tifffile.imwrite(folder / f"c{i}.tif", _image(10 + i, 200).data)
    on_images = Predictor(tiny_unet2d, device=DeviceSpec.parse("cpu", precision="int8", calibrate=[folder]))
    assert on_images.precision.calibration.startswith("2 image(s)")
    assert 2 <= on_images.precision.tiles <= 16
    Predictor(tiny_unet2d, device=INT8)
    assert len(list((own_cache / "precision").glob("int8-*.onnx"))) == 2
    out = on_images.predict(_image())["prob"].data
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@pytest.fixture(scope="module")
def strict_package(tmp_path_factory) -> Path:
    """A tiny U-Net package that allows int8 to deviate by at most 1e-9: every int8 run is refused."""
    torch = pytest.importorskip("torch")
    from emzoo.architectures.unet import UNet
    from emzoo.packaging import BuildOptions, package_module

    torch.manual_seed(0)
    pre = ({"id": "zero_mean_unit_variance", "kwargs": {"axes": ["channel", "y", "x"]}},)
    info = tiny_info("strict unet2d", "cyx", pre)
    sample = np.random.default_rng(0).integers(0, 255, (128, 128)).astype(np.uint8)
    options = BuildOptions(test_with_bioimageio=False, test_size=64, weight_formats=("onnx", "torchscript"))
    target = tmp_path_factory.mktemp("strict") / "strict.zip"
    return package_module(
        UNet(depth=2, features=4),
        info,
        sample,
        target,
        extra_config={"precision": {"max_deviation": 1e-9}},
        options=options,
    )


def test_int8_is_refused_beyond_the_declared_deviation(strict_package, own_cache):
    with pytest.raises(
        UsageError, match=r"refused for this model.*deviates from fp32 by up to .* 1e-09"
    ) as e:
        Predictor(strict_package, device=INT8)
    assert "config.emzoo.precision.max_deviation" in str(e.value)
    with pytest.raises(UsageError, match="refused"):  # the cached measurement refuses too
        Predictor(strict_package, device=INT8)
    assert Predictor(strict_package, device="cpu").precision.precision == "fp32"


def _cli(*args) -> subprocess.CompletedProcess:
    """The real CLI, in a process of its own."""
    code = "import sys; from emzoo.cli import main; main(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=300,
    )


def test_predict_int8_end_to_end_and_refusals(tiny_unet2d, strict_package, tmp_path):
    image = tmp_path / "em.tif"
    tifffile.imwrite(image, _image().data)
    done = _cli("predict", tiny_unet2d, image, "-o", tmp_path / "out", "--precision", "int8", "-q")
    assert done.returncode == 0, done.stderr
    assert "precision: int8 (calibrated on the package's test input" in done.stdout
    assert (tmp_path / "out" / "em_prob.tif").is_file()

    refused = _cli("predict", strict_package, image, "-o", tmp_path / "out2", "--precision", "int8", "-q")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().count("\n") == 0
    assert "--precision int8 is refused" in refused.stderr and "use --precision fp32" in refused.stderr
    assert not (tmp_path / "out2" / "em_prob.tif").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--precision", "int4"], "--precision 'int4': use fp32, int8, bf16, fp16"),
        (["--precision", "bf16", "--device", "cpu"], "no bfloat16 kernels"),
        (["--precision", "fp16", "--device", "cpu"], "runs fp16 convolutions on x86 in fp32"),
        (["--calibrate", "x"], "--calibrate is for --precision int8"),
    ],
)
def test_bad_precision_is_one_line_exit_2(tiny_unet2d, tmp_path, args, expected):
    image = tmp_path / "em.tif"
    tifffile.imwrite(image, _image().data)
    result = CliRunner().invoke(
        main, ["predict", str(tiny_unet2d), str(image), "-o", str(tmp_path / "o"), *args]
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and expected in result.output
    assert result.output.strip().count("\n") == 0
    assert not (tmp_path / "o").exists()


def test_emzoo_test_reports_the_int8_mismatch(tiny_unet2d):
    result = CliRunner().invoke(main, ["test", str(tiny_unet2d), "--precision", "int8", "--no-bioimageio"])
    assert result.exit_code == 0, result.output
    assert "reproduce test outputs (emzoo) at int8" in result.output
    assert "prob: int8 vs the fp32 test output: max abs" in result.output
    assert "not run: --precision int8 quantizes ONNX weights, these are torchscript" in result.output
    bad = CliRunner().invoke(main, ["test", str(tiny_unet2d), "--precision", "bf16"])
    assert bad.exit_code == 2 and "no bfloat16 kernels" in bad.output


def test_int8_needs_onnx_weights_on_cpu(tiny_unet2d):
    with pytest.raises(UsageError, match=r"quantizes ONNX weights, these are torchscript"):
        Predictor(tiny_unet2d, weight_format="torchscript", device=INT8)
    with pytest.raises(UsageError, match="precision"):
        DeviceSpec("cpu", precision="fp8")  # type: ignore[arg-type]
