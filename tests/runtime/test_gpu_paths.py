"""The GPU code paths that also run on the CPU: the torch backend's host/device copies with pinning off,
bf16 autocast (its mechanics: deviation measured, report filled, the package's limit), which precision
may run where, and which weights run on CUDA; the CLI end to end with ``--batch-size``."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from emzoo.cli import main
from emzoo.errors import BackendError, UsageError
from emzoo.io import Image, ImageMeta
from emzoo.runtime.backends.quantize import refusal
from emzoo.runtime.batching import Batches
from emzoo.runtime.predictor import Predictor
from emzoo.runtime.settings import DeviceSpec
from tests.tiny_packages import tiny_info

torch = pytest.importorskip("torch")

from emzoo.runtime.backends.precision import AutocastReport, autocast_precision  # noqa: E402
from emzoo.runtime.backends.torch_weights import (  # noqa: E402
    cuda_weight_format,
    nvidia_driver,
    to_device,
    to_host,
    torch_formats,
)


def _image(size: int = 150) -> Image:
    data = np.random.default_rng(1).integers(0, 255, (size, size)).astype(np.uint8)
    return Image(data, ImageMeta(axes="yx"))


def test_host_and_device_copies_with_pinning_off():
    arrays = [np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2], np.ones((2, 2), np.uint8)]
    tensors = to_device(torch, arrays, "cpu", pin=False)  # a view that is not contiguous is copied
    assert [t.device.type for t in tensors] == ["cpu", "cpu"]
    back = to_host(torch, tensors, pin=False)
    for a, b in zip(arrays, back, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    low = to_host(torch, [torch.ones(2, dtype=torch.bfloat16), torch.ones(2, dtype=torch.float16)], pin=False)
    assert [x.dtype for x in low] == [np.float32, np.float32]  # numpy has no bfloat16


def test_the_torch_backend_measures_no_memory_on_cpu(tiny_unet2d):
    predictor = Predictor(tiny_unet2d, weight_format="torchscript", device="cpu")
    backend = predictor.backend
    assert backend.free_bytes() is None and backend.block_bytes([(1, 1, 64, 64)]) is None
    assert Batches("cpu").fit(backend, [(1, 1, 64, 64)], 10) is None
    assert backend.target == "cpu" and backend.precision == "fp32"


def test_bf16_autocast_mechanics_on_cpu(tiny_unet2d):
    predictor = Predictor(tiny_unet2d, weight_format="torchscript", device="cpu")
    low, report = autocast_precision(predictor, "bf16")  # the CLI refuses bf16 on CPU: see below
    assert isinstance(report, AutocastReport) and report.precision == "bf16" and report.device == "cpu"
    measured = report.deviation["prob"]
    assert 0 < measured["max_abs"] < 0.05  # autocast ran (not fp32), close to fp32
    assert measured["mean_abs"] <= measured["max_abs"]
    note = report.note()
    assert note.startswith("precision: bf16 (torch autocast on cpu); deviation from fp32 on the test input")
    assert low.precision == "bf16" and predictor.backend.precision == "fp32"  # measured, not installed
    fp32 = predictor.predict(_image())["prob"].data
    predictor.backend = low
    bf16 = predictor.predict(_image())["prob"].data
    assert bf16.dtype == fp32.dtype == np.float32
    assert 0 < float(np.abs(bf16 - fp32).max()) < 0.05


@pytest.fixture(scope="module")
def strict_package(tmp_path_factory):
    """A tiny U-Net package that allows a deviation from fp32 of at most 1e-9."""
    from emzoo.architectures.unet import UNet
    from emzoo.packaging import BuildOptions, package_module

    torch.manual_seed(0)
    pre = ({"id": "zero_mean_unit_variance", "kwargs": {"axes": ["channel", "y", "x"]}},)
    sample = np.random.default_rng(0).integers(0, 255, (128, 128)).astype(np.uint8)
    return package_module(
        UNet(depth=2, features=4),
        tiny_info("strict unet2d", "cyx", pre),
        sample,
        tmp_path_factory.mktemp("strict") / "strict.zip",
        extra_config={"precision": {"max_deviation": 1e-9}},
        options=BuildOptions(
            test_with_bioimageio=False, test_size=64, weight_formats=("onnx", "torchscript")
        ),
    )


def test_autocast_is_refused_beyond_the_declared_deviation(strict_package):
    predictor = Predictor(strict_package, weight_format="torchscript", device="cpu")
    with pytest.raises(UsageError, match=r"precision=bf16 is refused for this model.*1e-09") as e:
        autocast_precision(predictor, "bf16")
    assert "config.emzoo.precision.max_deviation" in str(e.value)


def test_autocast_needs_torch_weights(tiny_unet2d):
    onnx = Predictor(tiny_unet2d, weight_format="onnx", device="cpu")
    with pytest.raises(BackendError, match="runs torch weights under autocast, not onnx weights"):
        autocast_precision(onnx, "fp16")


@pytest.mark.parametrize(
    ("precision", "weights", "device", "expected"),
    [
        ("bf16", "torchscript", "cuda", None),
        ("fp16", "pytorch_state_dict", "cuda:1", None),
        ("fp32", "onnx", "cuda", None),
        ("int8", "onnx", "cpu", None),
        ("fp16", "onnx", "cuda", "runs torch weights on CUDA (autocast), these are onnx"),
        ("int8", "onnx", "cuda", "runs ONNX weights on the CPU only"),
        ("int8", "torchscript", "cuda", "on CUDA use {precision=fp16} or {precision=bf16}"),
        ("bf16", "torchscript", "cpu", "bfloat16 autocast is slower on the CPU than int8"),
        ("bf16", "onnx", "cpu", "no bfloat16 kernels"),
        ("fp16", "torchscript", "cpu", "float16 autocast on the CPU took 200x"),
        ("int8", "torchscript", "cpu", "quantizes ONNX weights, these are torchscript"),
    ],
)
def test_which_precision_runs_where(precision, weights, device, expected):
    why = refusal(precision, weights, device)
    assert why is None if expected is None else expected in why


def test_bf16_with_torch_weights_is_refused_on_cpu_in_one_line(tiny_unet2d, tmp_path):
    with pytest.raises(UsageError, match="slower on the CPU than int8"):
        Predictor(tiny_unet2d, weight_format="torchscript", device=DeviceSpec.parse("cpu", precision="bf16"))
    image = tmp_path / "em.tif"
    tifffile.imwrite(image, _image().data)
    args = ["predict", str(tiny_unet2d), str(image), "-o", str(tmp_path / "o"), "--weights", "torchscript"]
    result = CliRunner().invoke(main, [*args, "--precision", "bf16", "--device", "cpu"])
    assert result.exit_code == 2 and result.output.strip().count("\n") == 0
    assert "--precision bf16: onnxruntime" in result.output and "use --precision int8" in result.output


def test_weights_by_device(tiny_unet2d):
    predictor = Predictor(tiny_unet2d, device="cpu")
    assert torch_formats(predictor.package) == ["torchscript"]
    assert cuda_weight_format(predictor.package, DeviceSpec.parse("cpu")) is None
    if not torch.cuda.is_available():  # CUDA asked for, but torch has none: emzoo's order (onnx first)
        assert cuda_weight_format(predictor.package, DeviceSpec.parse("cuda")) is None
    if not nvidia_driver():
        assert cuda_weight_format(predictor.package, DeviceSpec.parse("auto")) is None
    assert predictor.weights.format == "onnx"


def _cli(*args, code: str | None = None) -> subprocess.CompletedProcess:
    """The real CLI (or ``code``), in a process of its own."""
    code = code or "import sys; from emzoo.cli import main; main(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=300,
    )


@pytest.mark.skipif(nvidia_driver(), reason="this machine has an NVIDIA driver: auto looks for CUDA")
def test_auto_without_an_nvidia_driver_never_imports_torch(tiny_unet2d):
    code = (
        "import sys, numpy as np; from emzoo.runtime.predictor import Predictor; "
        "p = Predictor(sys.argv[1]); p.run({'raw': np.zeros((1, 1, 64, 64), np.float32)}); "
        "print(p.weights.format, p.device, 'torch' in sys.modules)"
    )
    done = _cli(tiny_unet2d, code=code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["onnx", "cpu", "False"]


def test_predict_with_a_batch_size_writes_the_batch_1_output(tiny_unet2d, tmp_path):
    image = tmp_path / "em.tif"
    tifffile.imwrite(image, _image(300).data)
    outputs = {}
    for batch in ("1", "4"):
        out = tmp_path / f"b{batch}"
        done = _cli("predict", tiny_unet2d, image, "-o", out, "--tile", "64", "--batch-size", batch, "-q")
        assert done.returncode == 0, done.stderr
        outputs[batch] = tifffile.imread(out / "em_prob.tif")
    np.testing.assert_allclose(outputs["4"], outputs["1"], atol=1e-6)
