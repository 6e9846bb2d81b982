"""The file driver with ``InputOptions(rescale="auto")``: what was resampled is on the summary (for
provenance), slices of a volume are resampled in-plane only, streaming is refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from emzoo.drivers.files import predict_samples
from emzoo.drivers.options import InputOptions, OutputOptions, RunOptions, StreamOptions
from emzoo.errors import UsageError
from emzoo.io import InputFile, read_image
from emzoo.runtime.predictor import Predictor

MEMBRANE = Path(__file__).resolve().parents[2] / "zoo_models" / "em-membrane-unet2d"


@pytest.fixture(scope="module")
def membrane():
    return Predictor(MEMBRANE, weight_format="onnx")


def _input(tmp_path: Path, data: np.ndarray, nm: float | None) -> dict[str, InputFile]:
    path = tmp_path / "em.tif"
    if nm is None:
        tifffile.imwrite(path, data)
    else:
        axes = "ZYX"[-data.ndim :]
        tifffile.imwrite(
            path, data, imagej=True, resolution=(1 / nm, 1 / nm), metadata={"unit": "nm", "axes": axes}
        )
    return {"raw": InputFile(path, Path(path.name))}


def test_the_summary_records_what_was_resampled(tmp_path, membrane):
    sample = _input(tmp_path, np.random.default_rng(0).integers(0, 255, (96, 80), np.uint8), 8.0)
    options = RunOptions(inputs=InputOptions(rescale="auto"))
    summary = predict_samples(membrane, [sample], tmp_path / "out", options=options)
    assert summary.failed == [] and len(summary.done) == 1
    record = summary.rescaled[sample["raw"].path].as_dict()
    assert record["factor"] == {"y": 2.0, "x": 2.0} and record["unit"] == "nanometer"
    assert record["from"] == {"y": 8.0, "x": 8.0} and record["to"] == {"y": 4.0, "x": 4.0}
    # random noise is also (rightly) out of distribution: that warning is another note
    assert f"{sample['raw'].path}: resampled 8 nm/px -> 4 nm/px" in summary.notes
    written = read_image(tmp_path / "out" / "em_membrane_probability.tif")
    assert written.shape == (96, 80) and written.meta.pixel_size == {"y": 8.0, "x": 8.0}


def test_slices_of_a_volume_are_resampled_in_plane(tmp_path, membrane):
    volume = np.random.default_rng(1).integers(0, 255, (3, 64, 72), np.uint8)
    sample = _input(tmp_path, volume, 2.0)  # 2 nm: halved in y and x, z kept
    options = RunOptions(inputs=InputOptions(slices=True, rescale="auto"))
    summary = predict_samples(membrane, [sample], tmp_path / "out", options=options)
    assert summary.failed == []
    assert summary.rescaled[sample["raw"].path].model_shape == (32, 36)
    assert read_image(tmp_path / "out" / "em_membrane_probability.tif").shape == (3, 64, 72)


def test_streaming_is_refused(tmp_path, membrane):
    with pytest.raises(UsageError) as e:
        RunOptions(inputs=InputOptions(rescale="auto"), stream=StreamOptions(enabled=True))
    assert e.value.template == "{rescale=auto} resamples in memory only: leave out {stream=True}"
    sample = _input(tmp_path, np.zeros((64, 64), np.uint8), 8.0)
    options = RunOptions(OutputOptions(format="ome-zarr"), InputOptions(rescale="auto"))  # streams by default
    summary = predict_samples(membrane, [sample], tmp_path / "out", options=options)
    assert [reason for _, reason in summary.failed] == [
        "{rescale=auto} resamples in memory only and this input is predicted out of core: add "
        "{stream=False}, or resample it to 4 nm/px first"
    ]
