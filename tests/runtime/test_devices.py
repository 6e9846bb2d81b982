"""The device index (``cuda:1``) is parsed, kept and forwarded to every backend and to cluster workers,
checked on the CPU: the backends' device choice is pure, and the worker's model reference carries the
requested device."""

from __future__ import annotations

import pickle
from dataclasses import replace
from types import SimpleNamespace

import pytest

from emzoo.errors import BackendError
from emzoo.runtime.settings import DeviceSpec

CUDA_AND_CPU = ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cuda:1", DeviceSpec("cuda", 1)),
        ("CUDA:0", DeviceSpec("cuda", 0)),
        ("cuda", DeviceSpec("cuda")),
        ("cpu", DeviceSpec("cpu")),
        ("auto", DeviceSpec("auto")),
    ],
)
def test_device_text_is_parsed_with_its_index(text, expected):
    assert DeviceSpec.parse(text) == expected
    assert DeviceSpec.parse(str(expected)) == expected  # and printed back as it is parsed


def test_onnxruntime_gets_the_device_index():
    from emzoo.runtime.backends.onnx import providers_for

    assert providers_for(DeviceSpec.parse("cuda:1"), CUDA_AND_CPU) == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]
    assert providers_for(DeviceSpec.parse("cuda"), CUDA_AND_CPU)[0] == (
        "CUDAExecutionProvider",
        {"device_id": 0},
    )
    assert providers_for(DeviceSpec.parse("cpu"), CUDA_AND_CPU) == ["CPUExecutionProvider"]
    with pytest.raises(BackendError, match="no CUDAExecutionProvider"):
        providers_for(DeviceSpec.parse("cuda:1"), ["CPUExecutionProvider"])


def test_pytorch_gets_the_device_index():
    from emzoo.runtime.backends.torch_weights import torch_device

    with_cuda = SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: True))
    without = SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: False))
    assert torch_device(with_cuda, DeviceSpec.parse("cuda:1")) == "cuda:1"
    assert torch_device(with_cuda, DeviceSpec.parse("auto")) == "cuda:0"
    assert torch_device(without, DeviceSpec.parse("auto")) == "cpu"
    with pytest.raises(BackendError, match="no CUDA device"):
        torch_device(without, DeviceSpec.parse("cuda:1"))


@pytest.fixture(scope="module")
def onnx_package():
    pytest.importorskip("torch", reason="building the package needs torch")
    from tests.conformance.generate import package

    return package("g05-param-halo")


def test_the_worker_reference_keeps_the_requested_device(onnx_package):
    from emzoo.drivers.distributed import ModelRef, worker_predictor
    from emzoo.runtime.predictor import Predictor

    predictor = Predictor(onnx_package, weight_format="onnx", device="cpu")
    assert predictor.requested_device == DeviceSpec("cpu")
    ref = ModelRef.of(predictor)
    assert ref.device == DeviceSpec("cpu") and ref.weight_format == "onnx"
    # what a cuda:1 run sends to its workers (no GPU here: the field is set as Predictor sets it)
    predictor.requested_device = DeviceSpec.parse("cuda:1")
    assert ModelRef.of(predictor).device == DeviceSpec("cuda", 1)
    # the reference travels to the workers pickled, and builds their predictor with that device
    assert pickle.loads(pickle.dumps(ModelRef.of(predictor))) == ModelRef.of(predictor)
    on_worker = worker_predictor(replace(ref, settings=ref.settings))
    assert on_worker.requested_device == ref.device and on_worker.weights.format == "onnx"
