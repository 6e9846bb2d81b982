"""Out-of-core prediction: streaming statistics, chunked prediction equal to in-memory, resuming."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import mrcfile
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from emzoo.cli import main
from emzoo.drivers import streaming
from emzoo.drivers.chunks import plan_stream
from emzoo.drivers.options import InputOptions, OutputOptions, StreamOptions
from emzoo.drivers.slices import predict_slices
from emzoo.drivers.stream_store import RECORD, partial_path
from emzoo.drivers.streaming import predict_streaming
from emzoo.errors import InputError
from emzoo.io import Image, ImageMeta, read_image
from emzoo.io.formats.zarr_store import write_ome_zarr
from emzoo.package.spec import Op
from emzoo.runtime import processing

AXES = ("batch", "channel", "y", "x")
CAL = ImageMeta("yx", {"y": 2.5, "x": 2.5}, "nanometer")


def lazy(data: np.ndarray, chunks) -> zarr.Array:
    z = zarr.create_array(store={}, shape=data.shape, dtype=data.dtype, chunks=chunks)
    z[...] = data
    return z


def image_u8(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).gamma(2.0, 30.0, shape).clip(0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ streaming statistics


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "int32"])
@pytest.mark.parametrize("axes", [None, ["y", "x"], ["channel", "y", "x"]])
@pytest.mark.parametrize("method", ["linear", "inverted_cdf"])
def test_streaming_quantiles_of_integers_are_exact(dtype, axes, method, rng):
    info = np.iinfo(dtype)
    data = rng.integers(max(info.min, -3000), min(info.max, 3000), (1, 2, 130, 97)).astype(dtype)
    qs = [0.0, 0.01, 0.37, 0.5, 0.998, 1.0]
    expected = np.quantile(data, qs, axis=processing._reduce_axes(processing.Tensor(data, AXES), axes),
                           keepdims=True, method=method)  # fmt: skip
    got = processing.quantiles(processing.Tensor(lazy(data, (1, 1, 32, 32)), AXES), axes, qs, method)
    for i, value in enumerate(got):
        assert value.shape == expected[i].shape and value.dtype == expected[i].dtype
        np.testing.assert_array_equal(value, expected[i])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_streaming_quantiles_of_floats_are_within_the_documented_bound(dtype, rng):
    data = rng.standard_normal((1, 1, 300, 211)).astype(dtype) * 7 + 3
    qs = [0.0, 0.01, 0.5, 0.99, 1.0]
    expected = np.quantile(data, qs, keepdims=True)
    got = processing.quantiles(processing.Tensor(lazy(data, (1, 1, 64, 64)), AXES), None, qs, "linear")
    bound = float(data.max() - data.min()) / processing.FLOAT_BINS
    for i, value in enumerate(got):
        assert abs(float(value.item()) - float(expected[i].item())) <= bound
    assert got[0].item() == data.min() and got[-1].item() == data.max()  # the ends are exact


def test_large_in_memory_arrays_use_histograms_too(monkeypatch, rng):
    monkeypatch.setattr(processing, "IN_MEMORY_QUANTILE_LIMIT", 1000)
    data = rng.integers(0, 65535, (1, 1, 200, 100)).astype(np.uint16)
    got = processing.quantiles(processing.Tensor(data, AXES), None, [0.01, 0.99], "linear")
    np.testing.assert_array_equal(np.concatenate(got), np.quantile(data, [0.01, 0.99], keepdims=True)[:, 0])


def test_statistics_memo_is_filled_once_and_reused(rng):
    data = image_u8((1, 1, 300, 200))
    ops = [
        Op("scale_linear", {"gain": 2.0, "offset": -5.0}),  # before a statistic: applied lazily
        Op("scale_range", {"axes": ["channel", "y", "x"], "min_percentile": 1.0, "max_percentile": 99.0}),
        Op("zero_mean_unit_variance", {"axes": ["channel", "y", "x"]}),
    ]
    memo: dict = {}
    fn = processing.bind(ops, processing.Tensor(lazy(data, (1, 1, 64, 64)), AXES), memo=memo)
    assert sorted(memo) == ["1:scale_range", "2:zero_mean_unit_variance"]
    reference = processing.apply(ops, processing.Tensor(data, AXES))
    np.testing.assert_allclose(fn(data), reference, rtol=1e-6, atol=1e-6)
    again = processing.bind(ops, processing.Tensor(None, AXES), memo=memo)  # no data needed any more
    np.testing.assert_array_equal(again(data[..., :64, :64]), fn(data[..., :64, :64]))


# ------------------------------------------------------------------------ chunked = in-memory prediction


def test_streaming_equals_in_memory_2d(predictor2d, tmp_path):
    data = image_u8((600, 500))
    write_ome_zarr(tmp_path / "in.ome.zarr", data, CAL)
    expected = predictor2d.predict(Image(data, CAL))["prob"]
    result = predict_streaming(
        predictor2d,
        read_image(tmp_path / "in.ome.zarr"),
        {"prob": tmp_path / "out.ome.zarr"},
        stream=StreamOptions(chunk=128),
    )
    assert (result.total, result.computed, result.skipped) == (20, 20, 0)  # 5 x 4 chunks
    out = read_image(tmp_path / "out.ome.zarr")
    assert out.meta.axes == "yx" and out.meta.pixel_size == {"y": 2.5, "x": 2.5}
    assert out.meta.unit == "nanometer"
    assert float(np.max(np.abs(np.asarray(out.data) - expected.data))) < 1e-5
    assert not partial_path(tmp_path / "out.ome.zarr", "ome-zarr").exists()
    assert not (tmp_path / "out.ome.zarr" / RECORD).exists()


def test_chunks_are_aligned_and_get_context(predictor2d):
    image = Image(lazy(image_u8((1000, 700)), (256, 256)), CAL)
    plan = plan_stream(predictor2d, image, chunk=130)
    assert plan.chunk == (132, 132)  # rounded up to the model's step (4)
    assert all(c >= 24 and c % 4 == 0 for c in plan.context)  # at least the halo, aligned
    read, core = plan.region(plan.jobs()[8])
    assert read["y"].start % 4 == 0 and core["y"].start == plan.context[0]


def test_streaming_equals_in_memory_3d(predictor3d, tmp_path):
    data = image_u8((40, 72, 68), seed=3)
    meta = ImageMeta("zyx", {"z": 4.0, "y": 2.0, "x": 2.0}, "nanometer")
    write_ome_zarr(tmp_path / "vol.ome.zarr", data, meta)
    expected = predictor3d.predict(Image(data, meta))["prob"].data
    result = predict_streaming(
        predictor3d,
        read_image(tmp_path / "vol.ome.zarr"),
        {"prob": tmp_path / "p.ome.zarr"},
        stream=StreamOptions(chunk=32),
    )
    assert result.total == 2 * 3 * 3
    out = read_image(tmp_path / "p.ome.zarr")
    assert out.meta.axes == "zyx" and out.meta.pixel_size == {"z": 4.0, "y": 2.0, "x": 2.0}
    assert float(np.max(np.abs(np.asarray(out.data) - expected))) < 1e-5


def test_streaming_slices_equals_in_memory_slices(predictor2d, tmp_path):
    data = image_u8((3, 200, 150), seed=4)
    meta = ImageMeta("zyx", {"z": 30.0, "y": 4.0, "x": 4.0}, "nanometer")
    write_ome_zarr(tmp_path / "vol.ome.zarr", data, meta)
    expected = predict_slices(predictor2d, {"raw": Image(data, meta)})["prob"]
    assert expected.meta.axes == "zyx" and expected.meta.pixel_size["z"] == 30.0
    result = predict_streaming(
        predictor2d,
        read_image(tmp_path / "vol.ome.zarr"),
        {"prob": tmp_path / "p.ome.zarr"},
        inputs=InputOptions(slices=True),
        stream=StreamOptions(chunk=128),
    )
    assert result.total == 3 * 2 * 2
    out = read_image(tmp_path / "p.ome.zarr")
    assert out.meta.axes == "zyx" and out.meta.pixel_size == pytest.approx({"z": 30.0, "y": 4.0, "x": 4.0})
    assert float(np.max(np.abs(np.asarray(out.data) - expected.data))) < 1e-5


def test_memory_mapped_mrc_streams_into_mrc(predictor2d, tmp_path):
    data = (image_u8((300, 260)).astype(np.uint16) * 50).astype(np.uint16)
    with mrcfile.new(tmp_path / "mic.mrc") as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 1.5
    image = read_image(tmp_path / "mic.mrc")
    assert isinstance(image.data, np.memmap)
    expected = predictor2d.predict(image)["prob"].data
    predict_streaming(
        predictor2d,
        image,
        {"prob": tmp_path / "p.mrc"},
        output=OutputOptions(format="mrc"),
        stream=StreamOptions(chunk=128),
    )
    with mrcfile.open(tmp_path / "p.mrc") as mrc:
        assert mrc.voxel_size.x == pytest.approx(1.5) and mrc.voxel_size.y == pytest.approx(1.5)
        assert float(np.max(np.abs(mrc.data - expected))) < 1e-5
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["mic.mrc", "p.mrc", "p.provenance.json"]  # no store left behind, the record beside


# ---------------------------------------------------------------------------- interrupted and resumed


def test_failed_run_leaves_no_complete_looking_output_and_resumes(predictor2d, tmp_path, monkeypatch):
    data = image_u8((300, 260))
    write_ome_zarr(tmp_path / "in.ome.zarr", data, CAL)
    image = read_image(tmp_path / "in.ome.zarr")
    final = tmp_path / "out.ome.zarr"
    compute = streaming.ChunkRunner.compute
    calls = []

    def failing(self, job, stats=None):
        calls.append(job.name)
        if len(calls) == 3:
            raise RuntimeError("node lost")
        return compute(self, job, stats)

    monkeypatch.setattr(streaming.ChunkRunner, "compute", failing)
    with pytest.raises(RuntimeError, match="node lost"):
        predict_streaming(predictor2d, image, {"prob": final}, stream=StreamOptions(chunk=128))
    partial = partial_path(final, "ome-zarr")
    assert not final.exists() and partial.is_dir()
    with pytest.raises(InputError, match="never finalised"):
        read_image(partial)
    with pytest.raises(InputError, match="other settings"):
        predict_streaming(predictor2d, image, {"prob": final}, stream=StreamOptions(chunk=256))

    monkeypatch.setattr(streaming.ChunkRunner, "compute", compute)
    result = predict_streaming(predictor2d, image, {"prob": final}, stream=StreamOptions(chunk=128))
    assert (result.skipped, result.computed, result.total) == (2, 7, 9)
    assert result.notes == ["resumed out.ome.zarr: 2 of 9 chunks were done already and are skipped"]
    expected = predictor2d.predict(Image(data, CAL))["prob"].data
    assert float(np.max(np.abs(np.asarray(read_image(final).data) - expected))) < 1e-5


_SLOW_CLI = """
import sys, time
from emzoo.drivers import streaming
mark_done = streaming.Stores.mark_done
def slow(self, job, seconds):
    mark_done(self, job, seconds)
    time.sleep(0.4)
streaming.Stores.mark_done = slow
from emzoo.cli import main
main(sys.argv[1:])
"""


def test_killed_zarr_prediction_resumes_without_recomputing(tiny_unet2d, tmp_path, monkeypatch):
    data = image_u8((512, 384), seed=7)
    write_ome_zarr(tmp_path / "in.ome.zarr", data, CAL)
    args = ["predict", str(tiny_unet2d), str(tmp_path / "in.ome.zarr"), "--chunk-size", "128", "-q"]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_CLI, *args, "-o", str(tmp_path / "out")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )
    final = tmp_path / "out" / "in_prob.ome.zarr"
    done_dir = partial_path(final, "ome-zarr") / RECORD / "done"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if done_dir.is_dir() and len([p for p in done_dir.iterdir() if not p.name.startswith(".")]) >= 3:
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert proc.returncode != 0, err.decode()  # killed, not finished
    assert not final.exists()
    finished = {p.name for p in done_dir.iterdir() if not p.name.startswith(".")}
    assert 3 <= len(finished) < 12

    computed = []
    compute = streaming.ChunkRunner.compute

    def recording(self, job, stats=None):
        computed.append(job.name)
        return compute(self, job, stats)

    monkeypatch.setattr(streaming.ChunkRunner, "compute", recording)
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert f"resumed in_prob.ome.zarr: {len(finished)} of 12 chunks were done already" in result.output
    assert not set(computed) & finished and len(computed) + len(finished) == 12

    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "again")])  # uninterrupted
    assert result.exit_code == 0, result.output
    resumed = np.asarray(read_image(final).data)
    uninterrupted = np.asarray(read_image(tmp_path / "again" / "in_prob.ome.zarr").data)
    np.testing.assert_array_equal(resumed, uninterrupted)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["in_prob.ome.zarr", "in_prob.provenance.json"]


def test_models_that_cannot_stream_say_why(predictor2d, tmp_path):
    from emzoo.errors import UsageError

    with pytest.raises(UsageError, match="chunk takes 1 or 2"):
        plan_stream(predictor2d, Image(lazy(image_u8((200, 200)), (64, 64)), CAL), chunk=(64, 64, 64))
    with pytest.raises(InputError, match="slices=True"):
        plan_stream(predictor2d, Image(lazy(image_u8((3, 80, 80)), (1, 64, 64)), ImageMeta("zyx")))


def test_in_memory_paths_are_unchanged_for_small_arrays(rng):
    data = rng.normal(size=(1, 1, 50, 40)).astype(np.float32)
    got = processing.quantiles(processing.Tensor(data, AXES), None, [0.1, 0.9], "linear")
    np.testing.assert_array_equal(np.concatenate(got), np.quantile(data, [0.1, 0.9], keepdims=True)[:, 0])


def test_lazy_arrays_are_read_in_whole_storage_chunks_and_small_pieces(monkeypatch):
    monkeypatch.setattr(processing, "READ_ELEMENTS", 100_000)
    data = image_u8((1, 2, 1000, 900))
    reads = []

    class Counting:
        def __init__(self, array):
            self.array, self.shape, self.dtype, self.chunks = array, array.shape, array.dtype, array.chunks

        def __getitem__(self, key):
            reads.append(key)
            return self.array[key]

    t = processing.Tensor(Counting(lazy(data, (1, 1, 100, 300))), AXES)
    pieces = list(processing._blocks(t, (2, 3)))  # per channel: the channel axis is taken whole
    assert all(r[1] == slice(0, 2) for r in reads)
    assert all(
        r[d].start % c == 0 and (r[d].stop - r[d].start) % c == 0
        for r in reads
        for d, c in ((2, 100), (3, 300))
    )
    assert max(p.size for p in pieces) <= processing.READ_ELEMENTS
    assert sum(p.size for p in pieces) == data.size
    mean, _ = processing.mean_std(t, ["y", "x"])
    np.testing.assert_allclose(mean.ravel(), data.mean(axis=(0, 2, 3)), rtol=1e-12)
