"""Provenance records (emzoo.drivers.provenance): what they hold for in-memory, slice-by-slice,
streamed, converted and Dask predictions; which outputs count as complete; the input digests."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile

from emzoo.drivers import digests, provenance
from emzoo.drivers.files import predict_samples
from emzoo.drivers.options import InputOptions, OutputOptions, RunOptions, StreamOptions
from emzoo.io import ImageMeta, InputFile
from emzoo.io.formats.zarr_store import write_ome_zarr


def image_u8(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).gamma(2.0, 30.0, shape).clip(0, 255).astype(np.uint8)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(predictor, paths, out: Path, **options):
    samples = [{"raw": InputFile(p, Path(p.name))} for p in paths]
    run_options = RunOptions(
        OutputOptions(**options.pop("output", {})), InputOptions(**options.pop("inputs", {})), **options
    )
    return predict_samples(predictor, samples, out, options=run_options)


def record_of(output: Path) -> dict:
    return json.loads(provenance.record_path(output).read_text())


def percentiles(data: np.ndarray) -> list[float]:
    """What the tiny 2D package's scale_range uses: the 1st and 99th percentile (linear)."""
    return [float(v) for v in np.quantile(data.astype(np.float64), [0.01, 0.99])]


def mrc(path: Path, data: np.ndarray, angstrom: float) -> Path:
    with mrcfile.new(path) as f:
        f.set_data(data)
        f.voxel_size = angstrom
    return path


# ------------------------------------------------------------------------------------------ contents


def test_the_record_of_an_in_memory_prediction(predictor2d, tiny_unet2d, tmp_path):
    data = image_u8((96, 80)).astype(np.int16)
    source = mrc(tmp_path / "a.mrc", data, 10.0)  # 1 nm/px: the training data's
    summary = run(predictor2d, [source], tmp_path / "out", output={"preview": True})
    assert summary.done == [source]
    out = tmp_path / "out" / "a_prob.mrc"
    record = record_of(out)
    assert provenance.record_path(out) in summary.written
    assert record["record_version"] == 1
    assert record["files"] == ["a_prob.mrc", "a_prob.preview.png"]
    model = record["model"]
    assert model["name"] == "tiny unet2d" and model["sha256"] == sha256(tiny_unet2d)
    assert model["sha256_of"] == "the package zip"
    weights = predictor2d.package.file(predictor2d.weights.source)
    assert model["weights"] == {"format": "onnx", "source": "weights.onnx", "sha256": sha256(weights)}
    section = record["input"]
    assert section["path"] == str(source.resolve()) and section["sha256"] == sha256(source)
    assert section["sha256_of"] == "the file" and section["bytes"] == source.stat().st_size
    assert (section["shape"], section["axes"], section["dtype"]) == ([96, 80], "yx", "int16")
    assert section["pixel_size"] == pytest.approx({"y": 10.0, "x": 10.0})
    assert section["unit"] == "angstrom"
    rt = record["runtime"]
    assert (rt["backend"], rt["weight_format"], rt["device"]) == ("onnxruntime", "onnx", "cpu")
    assert rt["providers"] == ["CPUExecutionProvider"] and rt["precision"] == "fp32"
    assert rt["tta"] is False and rt["requested"]["tile"] is None
    plan = predictor2d.plan({"raw": np.zeros((1, 1, 96, 80), np.float32)})
    assert rt["tile"] == [a.block for a in plan.axes] and rt["halo"] == [a.halo for a in plan.axes]
    assert rt["batch"] == plan.batch_size and rt["tiles"] == plan.n_tiles
    assert rt["stream"] is None and rt["slices"] is False and rt["rescale"] == "off"
    (op,) = record["processing"]["tensors"]["raw"]
    assert record["processing"]["statistics_of"] == "the whole image"
    assert op["op"] == "scale_range" and op["kwargs"]["min_percentile"] == 1.0
    assert [op["values"]["lower"], op["values"]["upper"]] == pytest.approx(percentiles(data))
    assert record["ood"] == {"score": None, "threshold": None, "out_of_distribution": False, "reasons": []}
    assert {"emzoo", "python", "numpy", "onnxruntime"} <= set(record["versions"])
    start, end = (datetime.fromisoformat(record[k].replace("Z", "+00:00")) for k in ("started", "finished"))
    assert record["started"].endswith("Z") and start.utcoffset().total_seconds() == 0
    assert start <= end and record["seconds"] == pytest.approx((end - start).total_seconds(), abs=1e-3)


def test_an_input_unlike_the_training_data_is_recorded_out_of_distribution(predictor2d, tmp_path):
    data = image_u8((64, 64)).astype(np.int16)
    source = mrc(tmp_path / "coarse.mrc", data, 40.0)  # 4 nm/px, trained on 1 nm/px
    summary = run(predictor2d, [source], tmp_path / "out")
    ood = record_of(tmp_path / "out" / "coarse_prob.mrc")["ood"]
    assert ood["out_of_distribution"] is True and ood["score"] is None and ood["threshold"] is None
    assert len(ood["reasons"]) == 1 and "pixel size" in ood["reasons"][0]
    assert any(ood["reasons"][0] in note for note in summary.notes)  # the same words as the warning


def test_slices_record_the_statistics_of_each_slice(predictor2d, tmp_path):
    volume = image_u8((3, 64, 72), seed=3)
    volume[1] //= 4  # another contrast: other percentiles
    tifffile.imwrite(tmp_path / "vol.tif", volume, metadata={"axes": "ZYX"})
    run(predictor2d, [tmp_path / "vol.tif"], tmp_path / "out", inputs={"slices": True})
    processing = record_of(tmp_path / "out" / "vol_prob.tif")["processing"]
    assert processing["statistics_of"] == "each z slice" and processing["slices"] == 3
    values = processing["tensors"]["raw"][0]["values"]
    expected = [percentiles(s) for s in volume]
    assert values["lower"] == pytest.approx([e[0] for e in expected])
    assert values["upper"] == pytest.approx([e[1] for e in expected])


@pytest.mark.parametrize("fmt", ["ome-zarr", "tiff"])
def test_a_streamed_record_equals_the_in_memory_one(predictor2d, tmp_path, fmt):
    data = image_u8((150, 130), seed=1)
    tifffile.imwrite(tmp_path / "a.tif", data)
    stream = StreamOptions(enabled=True, chunk=(64,))
    run(predictor2d, [tmp_path / "a.tif"], tmp_path / "s", output={"format": fmt}, stream=stream)
    run(predictor2d, [tmp_path / "a.tif"], tmp_path / "m", output={"format": "tiff"})
    suffix = ".ome.zarr" if fmt == "ome-zarr" else ".tif"
    streamed = record_of(tmp_path / "s" / f"a_prob{suffix}")
    in_memory = record_of(tmp_path / "m" / "a_prob.tif")
    assert streamed["files"] == [f"a_prob{suffix}"]
    assert streamed["processing"] == in_memory["processing"]  # exact: integer percentiles stream exactly
    assert streamed["input"] == in_memory["input"] and streamed["model"] == in_memory["model"]
    s = streamed["runtime"]["stream"]
    assert s["chunk"] == [64, 64] and s["chunks"] == 9 and s["done_before"] == 0 and s["dask"] is None
    assert streamed["runtime"]["tile"] is not None
    if fmt == "ome-zarr":
        attrs = json.loads((tmp_path / "s" / "a_prob.ome.zarr" / ".zattrs").read_text())
        assert attrs["emzoo"]["provenance"] == streamed and "written_by" in attrs["emzoo"]


def test_predict_zarr_writes_the_record_of_a_zarr_input(tiny_unet2d, tmp_path):
    from emzoo.drivers.distributed import predict_zarr

    source = tmp_path / "in.ome.zarr"
    write_ome_zarr(source, image_u8((140, 120)), ImageMeta("yx", {"y": 3.0, "x": 3.0}, "nanometer"))
    result = predict_zarr(tiny_unet2d, source, tmp_path / "p.ome.zarr", client=False, chunk=64)
    assert result.record == tmp_path / "p.provenance.json"
    record = json.loads(result.record.read_text())
    assert record["files"] == ["p.ome.zarr"]
    assert record["input"]["sha256"] == digests.input_digest(source)["sha256"]
    assert "metadata" in record["input"]["sha256_of"]
    assert record["input"]["pixel_size"] == {"y": 3.0, "x": 3.0}
    assert record["processing"]["tensors"]["raw"][0]["values"]["upper"] is not None
    assert record["ood"]["out_of_distribution"] is True  # 3 nm/px against 1 nm/px: checked here too


def test_a_dask_run_records_the_workers_statistics(tiny_unet2d, tmp_path):
    distributed = pytest.importorskip("distributed")
    from emzoo.drivers.distributed import predict_zarr

    source = tmp_path / "in.ome.zarr"
    write_ome_zarr(source, image_u8((130, 110)), ImageMeta("yx", {"y": 1.0, "x": 1.0}, "nanometer"))
    local = predict_zarr(tiny_unet2d, source, tmp_path / "local.ome.zarr", client=False, chunk=64)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        result = predict_zarr(tiny_unet2d, source, tmp_path / "dask.ome.zarr", client=client, chunk=64)
    on_dask, here = json.loads(result.record.read_text()), json.loads(local.record.read_text())
    assert on_dask["processing"] == here["processing"]
    assert on_dask["runtime"]["stream"]["dask"].startswith("tcp://")
    assert len(on_dask["runtime"]["tile"]) == 2  # a worker's tiling of the first chunk it finished


# ------------------------------------------------------------------------------ complete or not


def test_todo_follows_the_record(tmp_path):
    out = tmp_path / "a_prob.tif"
    preview = tmp_path / "a_prob.preview.png"
    wanted = {"prob": out, "prob:preview": preview}
    record = provenance.record_path(out)
    assert provenance.todo(wanted, record, out) == wanted  # nothing there
    out.write_bytes(b"x")
    assert provenance.todo(wanted, record, out) == wanted  # an output without its record: incomplete
    provenance.write({"record_version": 1, "files": ["a_prob.tif"]}, record)
    assert provenance.todo(wanted, record, out, derived={"prob:preview"}) == {"prob:preview": preview}
    assert provenance.todo({"prob": out}, record, out) == {}
    assert provenance.todo({"prob": out}, record, out, overwrite=True) == {"prob": out}
    out.unlink()  # the record of an output that is gone: removed
    assert provenance.todo({"prob": out}, record, out) == {"prob": out} and not record.exists()


def test_a_record_is_found_from_any_file_it_lists(tmp_path):
    record = {"record_version": 1, "files": ["a_prob.tif", "a_prob.preview.png", "a_mask.tif"]}
    path = provenance.write(record, tmp_path / "a_prob.provenance.json")
    for name in record["files"]:
        (tmp_path / name).write_bytes(b"x")
        assert provenance.find(tmp_path / name) == (path, record)
    assert provenance.find(path) == (path, record)
    assert provenance.find(tmp_path / "other.tif") is None


# ------------------------------------------------------------------------------------------- digests


def test_a_zarr_store_is_hashed_by_its_metadata_only(tmp_path):
    store = tmp_path / "in.ome.zarr"
    write_ome_zarr(store, image_u8((64, 64)), ImageMeta("yx"))
    before = digests.input_digest(store)
    chunk = next(p for p in (store / "0").rglob("*") if p.is_file() and not p.name.startswith("."))
    chunk.write_bytes(chunk.read_bytes()[::-1])  # pixels changed: not seen (terabytes are not read)
    assert digests.input_digest(store) == before
    attrs = json.loads((store / ".zattrs").read_text())
    (store / ".zattrs").write_text(json.dumps({**attrs, "note": "changed"}))
    assert digests.input_digest(store)["sha256"] != before["sha256"]
    assert before["sha256_of"].startswith("the store's metadata files")


def test_a_folder_of_slices_is_hashed_by_names_and_sizes(tmp_path):
    for i in range(3):
        tifffile.imwrite(tmp_path / f"s{i}.tif", image_u8((32, 32), i))
    first = digests.input_digest(tmp_path)
    assert first["files"] == 3 and "names and sizes" in first["sha256_of"]
    tifffile.imwrite(tmp_path / "s3.tif", image_u8((32, 32)))
    assert digests.input_digest(tmp_path)["sha256"] != first["sha256"]


def test_a_file_above_the_limit_is_hashed_by_its_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(digests, "FULL_HASH_BYTES", 1000)
    monkeypatch.setattr(digests, "PART_BYTES", 100)
    path = tmp_path / "big.raw"
    data = bytearray(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    path.write_bytes(bytes(data))
    first = digests.file_digest(path)
    assert "first and last" in first["sha256_of"] and first["bytes"] == 5000
    data[2500] ^= 0xFF  # the middle is not read
    path.write_bytes(bytes(data))
    assert digests.file_digest(path) == first
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert digests.file_digest(path)["sha256"] != first["sha256"]
