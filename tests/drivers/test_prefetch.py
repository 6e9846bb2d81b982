"""Folders with overlap (the next input read and the last outputs written while the model runs): the
same outputs and the same per-file failures as without it, and Ctrl-C leaves nothing half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from emzoo.drivers.files import predict_samples
from emzoo.drivers.options import OutputOptions, RunOptions
from emzoo.io import InputFile

REPO = Path(__file__).resolve().parents[2]


def _folder(folder: Path, n: int, size: int = 96) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img_{i}.tif"
        data = np.random.default_rng(i).gamma(2.0, 30.0, (size, size)).clip(0, 255).astype(np.uint8)
        tifffile.imwrite(path, data)
        paths.append(path)
    return paths


def _samples(paths: list[Path]) -> list[dict[str, InputFile]]:
    return [{"raw": InputFile(p, Path(p.name))} for p in paths]


def _run(predictor, paths, out: Path, overlap: bool, overwrite: bool = False):
    options = RunOptions(output=OutputOptions(overwrite=overwrite), overlap=overlap)
    return predict_samples(predictor, _samples(paths), out, options=options)


def _outputs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: tifffile.imread(p) for p in sorted(folder.glob("*.tif"))}


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def test_outputs_are_identical_with_and_without_overlap(predictor2d, tmp_path):
    paths = _folder(tmp_path / "in", 4)
    plain = _run(predictor2d, paths, tmp_path / "plain", overlap=False)
    overlapped = _run(predictor2d, paths, tmp_path / "overlap", overlap=True)
    assert plain.done == overlapped.done == paths
    assert plain.failed == overlapped.failed == []
    assert sorted(p.name for p in plain.written) == sorted(p.name for p in overlapped.written)
    a, b = _outputs(tmp_path / "plain"), _outputs(tmp_path / "overlap")
    assert list(a) == list(b) == [f"img_{i}_prob.tif" for i in range(4)]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert _hidden(tmp_path / "overlap") == []  # no partials left behind
    again = _run(predictor2d, paths, tmp_path / "overlap", overlap=True)  # skipped as before
    assert again.skipped == paths and again.done == []


def test_an_unreadable_file_in_the_middle_is_reported_and_the_rest_done(predictor2d, tmp_path):
    paths = _folder(tmp_path / "in", 4)
    paths[1].write_bytes(b"not a tiff at all")
    summaries = {ov: _run(predictor2d, paths, tmp_path / f"out{ov}", overlap=ov) for ov in (False, True)}
    for overlap, summary in summaries.items():
        assert summary.done == [paths[0], paths[2], paths[3]], overlap
        assert [p for p, _ in summary.failed] == [paths[1]]
        assert sorted(_outputs(tmp_path / f"out{overlap}")) == [
            "img_0_prob.tif",
            "img_2_prob.tif",
            "img_3_prob.tif",
        ]
    assert summaries[True].failed == summaries[False].failed  # the same reason, word for word


def test_a_failed_write_is_that_files_failure(predictor2d, tmp_path):
    paths = _folder(tmp_path / "in", 3)
    results = {}
    for overlap in (False, True):
        out = tmp_path / f"out{overlap}"
        (out / "img_1_prob.tif").mkdir(parents=True)  # a folder where an output goes: its write fails
        (out / "img_1_prob.tif" / "keep").write_text("x")
        summary = _run(predictor2d, paths, out, overlap=overlap, overwrite=True)
        assert summary.done == [paths[0], paths[2]]
        assert [p for p, _ in summary.failed] == [paths[1]]
        assert "Is a directory" in summary.failed[0][1]
        assert _hidden(out) == []
        results[overlap] = summary.failed[0][1].replace(str(out), "OUT")
    assert results[True] == results[False]


def test_ctrl_c_leaves_no_partial_file(tiny_unet2d, tmp_path):
    paths = _folder(tmp_path / "in", 40, size=256)
    out = tmp_path / "out"
    code = f"""
        import sys
        from pathlib import Path
        from emzoo.drivers.files import predict_samples
        from emzoo.drivers.options import RunOptions
        from emzoo.io import InputFile
        from emzoo.runtime.predictor import Predictor
        p = Predictor(r"{tiny_unet2d}", device="cpu")
        files = sorted(Path(r"{tmp_path / "in"}").glob("*.tif"))
        print("ready", flush=True)
        predict_samples(p, [{{"raw": InputFile(f, Path(f.name))}} for f in files], Path(r"{out}"),
                        options=RunOptions(overlap=True))
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.tif"))) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be interrupted")
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0 and len(list(out.glob("*.tif"))) == len(paths):
        pytest.skip("the run finished before the interrupt arrived (a loaded machine)")
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert _hidden(out) == []  # no partial left behind
    written = list(out.glob("*.tif"))
    assert 3 <= len(written) < len(paths)
    for path in written:  # every output there is whole
        assert tifffile.imread(path).shape == (256, 256)
