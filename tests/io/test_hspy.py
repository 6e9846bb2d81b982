"""HyperSpy ``.hspy`` files through rosettasciio: written here with rosettasciio's own writer (a
HyperSpy-free signal dictionary), read alone and in folders, with the pixel size of their axes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from emzoo.errors import InputError
from emzoo.io import expand_inputs, read_image

REPO = Path(__file__).resolve().parents[2]


def _axis(name: str, size: int, index: int, *, scale=1.0, units="", navigate=False) -> dict:
    return {
        "name": name,
        "size": size,
        "index_in_array": index,
        "scale": scale,
        "offset": 0.0,
        "units": units,
        "navigate": navigate,
    }


def write_hspy(path: Path, data: np.ndarray, axes: list[dict], title: str = "HAADF") -> Path:
    """A ``.hspy`` file written by ``rsciio.hspy.file_writer`` from a signal dictionary."""
    from rsciio.hspy import file_writer

    signal = {
        "data": data,
        "axes": axes,
        "metadata": {"General": {"title": title}, "Signal": {"signal_type": ""}},
        "original_metadata": {},
        "tmp_parameters": {},
        "attributes": {"_lazy": False},
        "package_info": {"name": "", "version": ""},
        "learning_results": {},
        "models": {},
    }
    file_writer(str(path), signal, show_progressbar=False)
    return path


def image_file(path: Path, scale=0.25, units="nm") -> tuple[Path, np.ndarray]:
    data = np.random.default_rng(0).gamma(2.0, 30.0, (64, 72)).astype(np.float32)
    axes = [_axis("y", 64, 0, scale=scale, units=units), _axis("x", 72, 1, scale=scale, units=units)]
    return write_hspy(path, data, axes), data


def test_an_image_with_its_pixel_size(tmp_path):
    path, data = image_file(tmp_path / "a.hspy")
    image = read_image(path)
    assert not isinstance(image.data, np.ndarray)  # lazy (dask over HDF5)
    assert image.meta.axes == "yx" and image.meta.format == "hspy"
    assert np.array_equal(np.asarray(image.data), data)
    assert image.meta.unit == "nanometer"
    assert image.meta.pixel_size == pytest.approx({"y": 0.25, "x": 0.25})
    assert image.meta.header["dataset"] == "HAADF"


def test_an_image_series_is_a_volume_in_the_unit_of_x(tmp_path):
    data = np.zeros((3, 16, 20), np.uint16)
    axes = [
        _axis("z", 3, 0, scale=2.0, units="nm", navigate=True),
        _axis("y", 16, 1, scale=0.5, units="µm"),
        _axis("x", 20, 2, scale=0.5, units="µm"),
    ]
    image = read_image(write_hspy(tmp_path / "series.hspy", data, axes))
    assert image.meta.axes == "zyx" and image.shape == (3, 16, 20)
    assert image.meta.unit == "micrometer"
    assert image.meta.pixel_size == pytest.approx({"x": 0.5, "y": 0.5, "z": 0.002})


def test_a_spectrum_is_no_image(tmp_path):
    data = np.zeros((8, 8, 100), np.float32)
    axes = [
        _axis("y", 8, 0, units="nm", navigate=True),
        _axis("x", 8, 1, units="nm", navigate=True),
        _axis("Energy", 100, 2, scale=10.0, units="eV"),
    ]
    path = write_hspy(tmp_path / "eels.hspy", data, axes, title="EELS")
    with pytest.raises(InputError, match="holds no image data"):
        read_image(path)


def test_a_damaged_file_is_one_error_naming_it_once(tmp_path):
    path, _ = image_file(tmp_path / "cut.hspy")
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(InputError, match="not a readable HyperSpy file") as err:
        read_image(path)
    assert str(err.value).count(str(path)) == 1


def test_folders_find_hspy_files(tmp_path):
    (tmp_path / "in").mkdir()
    image_file(tmp_path / "in" / "a.hspy")
    tifffile.imwrite(tmp_path / "in" / "b.tif", np.zeros((8, 8), np.uint8))
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    notes: list[str] = []
    found = expand_inputs([tmp_path / "in"], notes)
    assert [f.path.name for f in found] == ["a.hspy", "b.tif"]
    assert notes == [f"skipped 1 file (.txt) in {tmp_path / 'in'} that emzoo does not read"]


def test_predict_reads_hspy_alone_and_in_folders(tiny_unet2d, tmp_path):
    (tmp_path / "in").mkdir()
    path, _ = image_file(tmp_path / "in" / "a.hspy", scale=0.5, units="nm")

    def predict(arg: Path, out: Path) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "emzoo", "predict", str(tiny_unet2d), str(arg), "-o", str(out), "-q"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=300,
        )
        assert proc.returncode == 0 and "done: 1" in proc.stdout, proc.stdout + proc.stderr
        output = read_image(out / "a_prob.tif")
        assert output.shape == (64, 72)
        assert output.meta.unit == "nanometer"
        assert output.meta.pixel_size == pytest.approx({"y": 0.5, "x": 0.5}, rel=1e-5)

    predict(path, tmp_path / "alone")
    predict(tmp_path / "in", tmp_path / "folder")
