"""Blocks in batches, checked on the CPU: the batch size from free memory (pure, with numbers), the
out-of-memory fallback (a real backend behind a test double of a GPU's memory limit), batching and the
prefetching pipeline giving the same outputs as one block at a time."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from emzoo.errors import BackendError
from emzoo.io.meta import Image, ImageMeta
from emzoo.package.spec import SizeRule
from emzoo.runtime.batching import (
    BYTES_PER_PIXEL,
    CUDA_BATCH,
    MAX_BATCH,
    MEMORY_SHARE,
    Batches,
    batch_from_memory,
    is_out_of_memory,
    measure_memory,
    nvidia_free_bytes,
    plan_batch,
    prefetched,
)
from emzoo.runtime.planning import GridAxis, OutputPlan, plan_tiles
from emzoo.runtime.predictor import Predictor
from emzoo.runtime.settings import TileSettings
from emzoo.runtime.tiling import OutputAxisMap

GiB = 2**30


def _image(shape=(200, 168)) -> Image:
    data = np.random.default_rng(1).integers(0, 255, shape).astype(np.uint8)
    return Image(data, ImageMeta(axes="yx"))


# -- the batch size: pure ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("free", "per_block", "n_blocks", "cap", "expected"),
    [
        (80 * GiB, GiB, 100, 32, 32),  # 64 fit: capped
        (10 * GiB, GiB, 100, 32, 8),  # 80 % of 10 GiB
        (10 * GiB, GiB, 5, 32, 5),  # never more than the image's blocks
        (GiB // 2, GiB, 100, 32, 1),  # not even one fits: one (the out-of-memory fallback decides)
        (80 * GiB, GiB, 100, 16, 16),
        (80 * GiB, 0, 100, 32, 32),  # nothing measured per block
    ],
)
def test_batch_from_memory(free, per_block, n_blocks, cap, expected):
    assert batch_from_memory(free, per_block, n_blocks, cap) == expected


def test_the_batch_by_device():
    def never(blocks, n):
        raise AssertionError("measured where it must not be")

    common = {"blocks": [512, 512], "n_blocks": 64}
    assert plan_batch(None, device="cpu", batchable=True, batch_for=never, **common) == 1
    assert plan_batch(4, device="cpu", batchable=True, batch_for=never, **common) == 4
    assert plan_batch(4, device="cuda", batchable=False, batch_for=never, **common) == 1
    assert plan_batch(2, device="cuda:1", batchable=True, batch_for=never, **common) == 2  # the user's
    asked = []
    measured = plan_batch(
        None, device="cuda:0", batchable=True, batch_for=lambda b, n: asked.append((b, n)) or 12, **common
    )
    assert measured == 12 and asked == [([512, 512], 64)]
    unmeasured = plan_batch(None, device="cuda", batchable=True, batch_for=lambda b, n: None, **common)
    assert unmeasured == CUDA_BATCH


def test_plan_tiles_asks_for_the_memory_batch_on_cuda_only():
    rule = SizeRule(min=64, step=16)
    grid = (GridAxis("y", 3000, rule, (1,)), GridAxis("x", 3000, rule, (2,)))
    outputs = {"prob": OutputPlan(dims=(1, 2), maps=(OutputAxisMap(), OutputAxisMap()), halos=(0, 0))}
    asked = []

    def batch_for(blocks, n):
        asked.append((list(blocks), n))
        return 7

    cuda = plan_tiles(
        grid, outputs, TileSettings(), device="cuda", receptive_field=[10, 10], batch_for=batch_for
    )
    assert cuda.batch_size == 7 and asked == [([a.block for a in cuda.axes], cuda.n_tiles)]
    cpu = plan_tiles(
        grid, outputs, TileSettings(), device="cpu", receptive_field=[10, 10], batch_for=batch_for
    )
    assert cpu.batch_size == 1 and len(asked) == 1


@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch) -> Path:
    """An ``nvidia-smi`` on the path that reports 40000 MiB free and logs its arguments (a stand-in for
    the driver, which this machine lacks)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "calls.txt"
    script = folder / "nvidia-smi"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\necho 40000\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return log


def test_free_memory_from_the_driver(fake_nvidia_smi, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert nvidia_free_bytes(1) == 40000 * 2**20
    assert "--id=1" in fake_nvidia_smi.read_text()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # the process's cuda:1 is the driver's GPU 5
    nvidia_free_bytes(1)
    assert fake_nvidia_smi.read_text().splitlines()[-1].endswith("--id=5")


def test_without_the_driver_nothing_is_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert nvidia_free_bytes(0) is None
    onnx_on_cuda = SimpleNamespace(device="cuda:0", format="onnx")
    assert measure_memory(onnx_on_cuda, [(1, 1, 512, 512)]) is None
    assert Batches("cuda").fit(onnx_on_cuda, [(1, 1, 512, 512)], 64) is None


def test_a_backend_that_cannot_measure_gets_the_per_pixel_estimate_once(fake_nvidia_smi):
    onnx_on_cuda = SimpleNamespace(device="cuda", format="onnx")  # onnxruntime says nothing of memory
    shapes = [(1, 1, 512, 512)]
    free, per_block = measure_memory(onnx_on_cuda, shapes)
    assert (free, per_block) == (40000 * 2**20, BYTES_PER_PIXEL * 512 * 512)
    batches = Batches("cuda")
    expected = min(MAX_BATCH, int(free * MEMORY_SHARE // per_block))
    assert batches.fit(onnx_on_cuda, shapes, 1000) == expected
    assert batches.fit(onnx_on_cuda, shapes, 3) == 3
    assert len(fake_nvidia_smi.read_text().splitlines()) == 2  # fit measured once per block shape
    assert measure_memory(SimpleNamespace(device="cpu", format="onnx"), shapes) is None


class Gauge:
    """A device that reports its memory, as torch's backend on CUDA does (``block``: None = the probe
    block runs out of memory)."""

    device, format = "cuda:0", "torchscript"

    def __init__(self, free: int, block: int | None):
        self.free, self.block, self.probes = free, block, 0

    def free_bytes(self) -> int | None:
        return self.free

    def block_bytes(self, shapes) -> int | None:
        self.probes += 1
        if self.block is None:
            raise RuntimeError("CUDA out of memory. Tried to allocate 12.00 GiB")
        return self.block


def test_a_measuring_backend_sets_the_batch():
    batches, gauge = Batches("cuda:0"), Gauge(free=20 * GiB, block=GiB)
    assert batches.fit(gauge, [(1, 1, 1024, 1024)], 100) == 16
    assert batches.fit(gauge, [(1, 1, 1024, 1024)], 100) == 16 and gauge.probes == 1
    too_big = Gauge(free=20 * GiB, block=None)
    assert batches.fit(too_big, [(1, 1, 8192, 8192)], 100) == 1  # the run then says to lower the tile


# -- out of memory ---------------------------------------------------------------------------------


def test_out_of_memory_errors_are_recognised():
    torch = pytest.importorskip("torch")
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert is_out_of_memory(MemoryError())
    onnx = BackendError(
        "onnxruntime failed on a block of shape 16x1x512x512: [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : "
        "Non-zero status code returned while running Conv node. Failed to allocate memory for requested "
        "buffer of size 268435456"
    )
    assert is_out_of_memory(onnx)
    wrapped = BackendError("the network failed")
    wrapped.__cause__ = RuntimeError("CUDNN_STATUS_ALLOC_FAILED")
    assert is_out_of_memory(wrapped)
    assert not is_out_of_memory(ValueError("shapes 1x2 and 3x4 do not match"))


def _oom(n: int) -> Exception:
    return RuntimeError(f"CUDA out of memory. Tried to allocate {n} GiB")


def test_batches_halve_on_out_of_memory_and_keep_the_order(caplog):
    batches = Batches("cuda:0")
    sizes = []

    def compute(group):  # a device that holds 3 items at a time
        sizes.append(len(group))
        if len(group) > 3:
            raise _oom(len(group))
        return [x * 10 for x in group]

    with caplog.at_level(logging.WARNING, logger="emzoo.runtime.batching"):
        done = list(batches.run(list(range(20)), 16, list, compute))
    assert [x for _, result in done for x in result] == [x * 10 for x in range(20)]
    assert list(done[0][0]) == [0, 1]  # 16 -> 8 -> 4 -> 2
    assert sizes[:4] == [16, 8, 4, 2] and set(sizes[3:]) == {2}
    assert batches.limit == 2
    assert batches.notes == [
        "out of GPU memory at batch 16: continuing with batch 8",
        "out of GPU memory at batch 8: continuing with batch 4",
        "out of GPU memory at batch 4: continuing with batch 2",
    ]
    assert [r.getMessage() for r in caplog.records] == batches.notes  # each said once
    sizes.clear()
    list(batches.run(list(range(5)), 16, list, compute))  # the rest of the run: at the halved batch
    assert sizes == [2, 2, 1]


def test_at_one_block_the_error_says_to_choose_smaller_blocks():
    def compute(group):
        raise _oom(len(group))

    with pytest.raises(BackendError) as e:
        list(Batches("cuda").run([1, 2], 2, list, compute, block="2048x2048"))
    message = str(e.value)
    assert "out of GPU memory on cuda with a single block of 2048x2048 px" in message
    assert e.value.parameters() == ["tile"] and "\n" not in message


def test_other_errors_are_not_retried():
    calls = []

    def compute(group):
        calls.append(len(group))
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError, match="not a memory problem"):
        list(Batches("cuda").run([1, 2, 3, 4], 4, list, compute))
    assert calls == [4]


class MemoryLimit:
    """A real backend behind a test double of a GPU's memory limit: a batch of more than ``fits``
    blocks fails with ``error`` as torch or onnxruntime fail on a full GPU."""

    def __init__(self, backend, fits: int, error=_oom):
        self.backend, self.fits, self.error = backend, fits, error
        self.format, self.device = backend.format, backend.device
        self.sizes: list[int] = []

    def run(self, inputs):
        n = int(inputs[0].shape[0])
        self.sizes.append(n)
        if n > self.fits:
            raise self.error(n)
        return self.backend.run(inputs)


def _onnx_oom(n: int) -> Exception:
    return BackendError(
        f"onnxruntime failed on a block of shape {n}x1x64x64: [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION "
        ": Failed to allocate memory for requested buffer of size 4194304"
    )


@pytest.fixture(scope="module")
def one_at_a_time(tiny_unet2d):
    """The batch-1 output of the tiny U-Net on 64 px blocks (80 of them), per weight format."""
    settings = TileSettings(tile=(64,), batch_size=1)
    return {
        fmt: Predictor(tiny_unet2d, weight_format=fmt, device="cpu", settings=settings).predict(_image())
        for fmt in ("onnx", "torchscript")
    }


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_batching_on_cpu_gives_the_batch_1_output(tiny_unet2d, one_at_a_time, fmt):
    predictor = Predictor(
        tiny_unet2d, weight_format=fmt, device="cpu", settings=TileSettings(tile=(64,), batch_size=4)
    )
    out = predictor.predict(_image())["prob"].data
    assert predictor.last_plan.batch_size == 4 and predictor.last_plan.n_tiles > 4
    np.testing.assert_allclose(out, one_at_a_time[fmt]["prob"].data, atol=1e-6)


@pytest.mark.parametrize(("fmt", "error"), [("torchscript", _oom), ("onnx", _onnx_oom)])
def test_out_of_memory_halves_the_batch_and_gives_the_batch_1_output(tiny_unet2d, one_at_a_time, fmt, error):
    predictor = Predictor(
        tiny_unet2d, weight_format=fmt, device="cpu", settings=TileSettings(tile=(64,), batch_size=8)
    )
    limited = MemoryLimit(predictor.backend, fits=3, error=error)
    predictor.backend = limited
    out = predictor.predict(_image())["prob"].data
    np.testing.assert_allclose(out, one_at_a_time[fmt]["prob"].data, atol=1e-6)
    assert limited.sizes[:3] == [8, 4, 2] and max(limited.sizes[3:]) == 2
    assert predictor.batches.limit == 2
    assert predictor.batches.notes[0] == "out of memory at batch 8: continuing with batch 4"


def test_prefetching_gives_the_same_output_and_runs_in_worker_threads(tiny_unet2d, one_at_a_time):
    predictor = Predictor(
        tiny_unet2d,
        weight_format="torchscript",
        device="cpu",
        settings=TileSettings(tile=(64,), batch_size=4),
    )
    assert not predictor.batches.prefetch  # on CPU the network uses every core already
    predictor.batches.prefetch = True  # as on CUDA
    threads = set()
    backend = predictor.backend

    class Threads:
        format, device = backend.format, backend.device

        def run(self, inputs):
            threads.add(threading.get_ident())
            return backend.run(inputs)

    predictor.backend = Threads()
    done = []
    out = predictor.predict(_image(), progress=lambda n, total: done.append(n))["prob"].data
    np.testing.assert_allclose(out, one_at_a_time["torchscript"]["prob"].data, atol=1e-6)
    assert threads and threading.get_ident() not in threads
    assert done == sorted(done) and done[-1] == predictor.last_plan.n_tiles
    # prefetching and the out-of-memory fallback together
    predictor.backend = MemoryLimit(backend, fits=1)
    out = predictor.predict(_image())["prob"].data
    np.testing.assert_allclose(out, one_at_a_time["torchscript"]["prob"].data, atol=1e-6)
    assert predictor.batches.limit == 1


def test_prefetched_keeps_order_passes_errors_and_stops_its_thread():
    assert list(prefetched(iter(range(5)))) == [0, 1, 2, 3, 4]

    def failing():
        yield 1
        raise ValueError("read error")

    with pytest.raises(ValueError, match="read error"):
        list(prefetched(failing()))
    before = threading.active_count()
    items = prefetched(iter(range(100)))
    assert next(items) == 0
    items.close()
    assert threading.active_count() == before
