"""The chunked prediction as a dask.distributed job: a LocalCluster of 2 worker processes (1 thread
each) must write what the single-process streaming run writes."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from emzoo.cli import main
from emzoo.io import ImageMeta, read_image
from emzoo.io.formats.zarr_store import write_ome_zarr

distributed = pytest.importorskip("distributed")

CAL = ImageMeta("yx", {"y": 3.0, "x": 3.0}, "nanometer")


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _image(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).gamma(2.0, 30.0, shape).clip(0, 255).astype(np.uint8)


def test_cluster_output_equals_single_process_output(client, tiny_unet2d, tmp_path):
    from emzoo.drivers.distributed import predict_zarr

    source = tmp_path / "in.ome.zarr"
    write_ome_zarr(source, _image((520, 400)), CAL)
    local = predict_zarr(tiny_unet2d, source, tmp_path / "local.ome.zarr", client=False, chunk=128)
    result = predict_zarr(tiny_unet2d, source, tmp_path / "dask.ome.zarr", client=client, chunk=128)
    assert result.total == local.total == 5 * 4 and result.computed == 20
    a, b = read_image(tmp_path / "dask.ome.zarr"), read_image(tmp_path / "local.ome.zarr")
    assert a.meta.pixel_size == b.meta.pixel_size == {"y": 3.0, "x": 3.0}
    assert float(np.max(np.abs(np.asarray(a.data) - np.asarray(b.data)))) <= 1e-6
    names = {p.name for p in tmp_path.iterdir()}
    records = {"local.provenance.json", "dask.provenance.json"}  # emzoo.drivers.provenance
    assert names == {"in.ome.zarr", "local.ome.zarr", "dask.ome.zarr", *records}  # no partial store left


def test_cluster_runs_slices_and_resumes(client, tiny_unet2d, tmp_path):
    from emzoo.drivers import streaming
    from emzoo.drivers.distributed import InputRef, predict_zarr
    from emzoo.drivers.options import InputOptions, OutputOptions, StreamOptions
    from emzoo.runtime.predictor import Predictor

    meta = ImageMeta("zyx", {"z": 20.0, "y": 3.0, "x": 3.0}, "nanometer")
    write_ome_zarr(tmp_path / "vol.ome.zarr", _image((3, 150, 140), seed=2), meta)
    local = tmp_path / "local.ome.zarr"
    predict_zarr(tiny_unet2d, tmp_path / "vol.ome.zarr", local, client=False, slices=True, chunk=128)
    # a run that was interrupted after two chunks: the cluster does only the rest
    out = tmp_path / "dask.ome.zarr"
    predictor = Predictor(tiny_unet2d)
    image = InputRef(str(tmp_path / "vol.ome.zarr")).open()
    stream = streaming.begin(
        predictor,
        image,
        {"prob": out},
        output=OutputOptions(format="ome-zarr"),
        inputs=InputOptions(slices=True),
        stream=StreamOptions(chunk=128),
    )
    runner = streaming.ChunkRunner(predictor, image, stream.plan)
    for job in stream.todo[:2]:
        stream.stores.write(stream.plan, job, runner.compute(job))
        stream.stores.mark_done(job, 0.0)
    result = predict_zarr(predictor, tmp_path / "vol.ome.zarr", out, client=client, slices=True, chunk=128)
    assert (result.skipped, result.computed, result.total) == (2, 10, 12)
    a, b = np.asarray(read_image(out).data), np.asarray(read_image(local).data)
    assert a.shape == (3, 150, 140) and float(np.max(np.abs(a - b))) <= 1e-6


def test_cli_dask_option(client, tiny_unet2d, tmp_path):
    write_ome_zarr(tmp_path / "in.ome.zarr", _image((300, 260), seed=5), CAL)
    args = ["predict", str(tiny_unet2d), str(tmp_path / "in.ome.zarr"), "--chunk-size", "128", "-q"]
    result = CliRunner().invoke(main, [*args, "--dask", client.scheduler.address, "-o", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    a = np.asarray(read_image(tmp_path / "d" / "in_prob.ome.zarr").data)
    b = np.asarray(read_image(tmp_path / "s" / "in_prob.ome.zarr").data)
    assert float(np.max(np.abs(a - b))) <= 1e-6
