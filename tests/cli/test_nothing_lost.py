"""``emzoo predict`` loses nothing and leaves nothing half-written: inputs are never overwritten, its own
outputs are not predicted again, nothing is written outside ``-o``, a full disk is one line and leaves
no partial file, a killed run's partials are cleaned, and two runs never write one output at once."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from emzoo.cli import main

REPO = Path(__file__).resolve().parents[2]


def run(*args) -> object:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def image_u8(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).gamma(2.0, 30.0, shape).clip(0, 255).astype(np.uint8)


def everything(folder: Path) -> list[str]:
    """Every entry under ``folder``, hidden ones too."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def start(code: str) -> subprocess.Popen:
    """A Python process running ``code`` that prints ``ready`` once it is where the test wants it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


# ------------------------------------------------------------------- inputs are never overwritten


def test_an_output_never_replaces_an_input(tiny_unet2d, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", image_u8((64, 64), 0))
    tifffile.imwrite(folder / "a_prob.tif", image_u8((64, 64), 1))  # an input named like a's output
    before = (folder / "a_prob.tif").read_bytes()
    result = run("predict", tiny_unet2d, folder, "-o", folder, "--overwrite", "-q")
    assert result.exit_code == 1, result.output
    assert (folder / "a_prob.tif").read_bytes() == before  # the input is intact
    assert "failed " + str(folder / "a.tif") in result.output
    assert "would replace an input of this run" in result.output and "(--output)" in result.output
    assert "done: 1, skipped: 0, failed: 1" in result.output  # a_prob.tif itself is predicted
    assert (folder / "a_prob_prob.tif").is_file()
    # the next run does not feed its own output back (no a_prob_prob_prob.tif)
    result = run("predict", tiny_unet2d, folder, "-o", folder, "--overwrite", "-q")
    assert (folder / "a_prob.tif").read_bytes() == before
    assert "left out 1 input(s)" in result.output and "a_prob_prob.tif" in result.output
    records = ["a_prob_prob.provenance.json"]  # a_prob.tif's (a.tif's output failed: none)
    assert sorted(p.name for p in folder.iterdir()) == ["a.tif", "a_prob.tif", *records, "a_prob_prob.tif"]


@pytest.mark.parametrize(("fmt", "suffix"), [("tiff", ".tif"), ("mrc", ".mrc"), ("npy", ".npy"),
                                             ("ome-zarr", ".ome.zarr")])  # fmt: skip
def test_own_outputs_in_the_input_folder_are_not_predicted_again(tiny_unet2d, tmp_path, fmt, suffix):
    folder = tmp_path / "data"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", image_u8((64, 64)))
    out = ["-o", folder, "--output-format", fmt, "-q"]
    result = run("predict", tiny_unet2d, folder, *out)
    assert result.exit_code == 0, result.output
    for _ in range(2):  # again, and again with --overwrite: a.tif only
        result = run("predict", tiny_unet2d, folder, *out, *(["--overwrite"] if _ else []))
        assert result.exit_code == 0, result.output
        assert f"a_prob{suffix}" in result.output and "left out 1 input(s)" in result.output
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert names == sorted(["a.tif", "a_prob.provenance.json", f"a_prob{suffix}"])


def test_outputs_in_a_subfolder_of_the_input_folder(tiny_unet2d, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", image_u8((64, 64)))
    for _ in range(2):
        result = run("predict", tiny_unet2d, folder, "-o", folder / "out", "-q")
        assert result.exit_code == 0, result.output
    assert everything(folder / "out") == ["a_prob.provenance.json", "a_prob.tif"]


def test_predictions_of_predictions_elsewhere_still_run(tiny_unet2d, tmp_path):
    """Chaining models stays possible: emzoo's outputs outside the output folder are inputs."""
    tifffile.imwrite(tmp_path / "a.tif", image_u8((64, 64)))
    assert run("predict", tiny_unet2d, tmp_path / "a.tif", "-o", tmp_path / "one", "-q").exit_code == 0
    result = run("predict", tiny_unet2d, tmp_path / "one", "-o", tmp_path / "two", "-q")
    assert result.exit_code == 0
    assert everything(tmp_path / "two") == ["a_prob_prob.provenance.json", "a_prob_prob.tif"]


def test_inputs_of_one_name_in_two_folders_get_two_outputs(tiny_unet2d, tmp_path):
    for folder, seed in (("x", 0), ("y", 1)):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "a.tif", image_u8((64, 64), seed))
    out = tmp_path / "out"
    result = run("predict", tiny_unet2d, tmp_path / "x" / "a.tif", tmp_path / "y" / "a.tif", "-o", out, "-q")
    assert result.exit_code == 0 and "done: 2, skipped: 0, failed: 0" in result.output, result.output
    records = ["a_tif_2_prob.provenance.json", "a_tif_prob.provenance.json"]
    assert everything(out) == sorted([*records, "a_tif_2_prob.tif", "a_tif_prob.tif"])
    assert not np.array_equal(
        tifffile.imread(out / "a_tif_prob.tif"), tifffile.imread(out / "a_tif_2_prob.tif")
    )


def test_nothing_is_written_outside_the_output_folder(predictor2d, tmp_path):
    """A tensor id ``../x`` (a malicious package) or an input name that climbs out is refused."""
    from emzoo.drivers.files import predict_samples
    from emzoo.io import InputFile

    tifffile.imwrite(tmp_path / "a.tif", image_u8((64, 64)))
    out = tmp_path / "deep" / "out"
    evil = object.__new__(type(predictor2d))
    evil.__dict__.update(predictor2d.__dict__)
    spec = predictor2d.spec
    evil.spec = replace(spec, outputs=(replace(spec.outputs[0], id="../x"),))
    summary = predict_samples(evil, [{"raw": InputFile(tmp_path / "a.tif", Path("a.tif"))}], out)
    assert len(summary.failed) == 1 and "cannot be part of a file name" in summary.failed[0][1]
    climbing = InputFile(tmp_path / "a.tif", Path("../../a.tif"))
    summary = predict_samples(predictor2d, [{"raw": climbing}], out)
    assert len(summary.failed) == 1 and "would be outside the output folder" in summary.failed[0][1]
    assert {p.name for p in tmp_path.iterdir()} <= {"a.tif", "deep"}
    assert everything(tmp_path / "deep") in ([], ["out"])


# ------------------------------------------------------------------------------------ a full disk


def _fill_disk(monkeypatch, kind: str) -> None:
    """tifffile writes a quarter of the file, then fails as a full disk does."""
    real = tifffile.imwrite

    def full(path, data, *args, **kwargs):
        Path(path).write_bytes(b"\0" * 262056)
        if kind == "short":  # what numpy reports for a short write
            raise OSError("1048576 requested and 262056 written")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", full)
    assert real is not full


@pytest.mark.parametrize("kind", ["short", "enospc"])
def test_full_disk_is_one_line_and_leaves_no_partial_file(tiny_unet2d, tmp_path, monkeypatch, kind):
    tifffile.imwrite(tmp_path / "a.tif", image_u8((256, 256)))
    _fill_disk(monkeypatch, kind)
    out = tmp_path / "out"
    result = run("predict", tiny_unet2d, tmp_path / "a.tif", "-o", out, "-q")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if "no space left on" in line]
    assert len(lines) == 1 and f"no space left on {out}: 1 MB needed" in lines[0], result.output
    assert "requested and" not in result.output
    assert everything(out) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """``make(size)``: a small tmpfs (needs root and mount; the test is skipped otherwise)."""
    mounted_here = []

    def make(size: str) -> Path:
        folder = tmp_path / f"disk-{size}"
        folder.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
        mounted_here.append(folder)
        return folder

    yield make
    for folder in mounted_here:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("fmt", ["tiff", "mrc", "npy"])
def test_a_real_full_disk(tiny_unet2d, tmp_path, tiny_disk, fmt):
    """MRC is written through a memory map: without its blocks allocated first, a full disk would
    kill the process (SIGBUS) instead of raising ENOSPC."""
    disk = tiny_disk("1m")
    tifffile.imwrite(tmp_path / "a.tif", image_u8((600, 600)))  # a 1.4 MB float32 output
    args = [
        "predict",
        str(tiny_unet2d),
        str(tmp_path / "a.tif"),
        "-o",
        str(disk),
        "--output-format",
        fmt,
        "-q",
    ]
    done = subprocess.run(  # its own process: a SIGBUS must not take the test session down
        [sys.executable, "-m", "emzoo", *args], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"no space left on {disk}: 1 MB needed" in done.stdout + done.stderr
    assert everything(disk) == []


def test_unpacking_into_a_full_cache(tiny_unet2d, tmp_path, tiny_disk, monkeypatch):
    disk = tiny_disk("256k")  # the package unpacks to 0.56 MB
    monkeypatch.setenv("EMZOO_CACHE_DIR", str(disk))
    result = run("info", tiny_unet2d)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"no space left on {disk / 'packages'}: 1 MB needed" in lines[0], result.output
    assert everything(disk) == ["packages"]  # no partial folder


def test_unpacking_into_a_full_cache_injected(tiny_unet2d, tmp_path, monkeypatch):
    from emzoo.package import safe_zip

    real = safe_zip._extract_member
    count = []

    def full(zip_path, archive, info, dest, written, limit):
        count.append(info.filename)
        if len(count) > 2:
            dest.write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(zip_path, archive, info, dest, written, limit)

    monkeypatch.setattr(safe_zip, "_extract_member", full)
    monkeypatch.setenv("EMZOO_CACHE_DIR", str(tmp_path / "cache"))
    result = run("info", tiny_unet2d)
    assert result.exit_code == 1
    assert f"Error: no space left on {tmp_path / 'cache' / 'packages'}: " in result.output
    assert everything(tmp_path / "cache" / "packages") == []


# ------------------------------------------------------------------------------ half-written state


def test_partials_of_a_killed_run_are_cleaned(tiny_unet2d, tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", image_u8((64, 64)))
    out = tmp_path / "out"
    target = out / "a_prob.tif"
    writer = start(
        f"""
        import time
        from emzoo.atomic import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"half")
            print("ready", flush=True)
            time.sleep(120)
        """
    )
    kill9(writer)
    assert everything(out) == [f".a_prob.tif.partial-{writer.pid}"]
    assert run("predict", tiny_unet2d, tmp_path / "a.tif", "-o", out, "-q").exit_code == 0
    assert everything(out) == ["a_prob.provenance.json", "a_prob.tif"]


def test_a_live_writers_partial_is_left_alone(tmp_path):
    from emzoo.atomic import remove_stale_partials

    target = tmp_path / "x.tif"
    mine = tmp_path / f".x.tif.partial-{os.getppid()}"  # a live process (the test runner's parent)
    mine.write_text("busy")
    assert remove_stale_partials(target) == [] and mine.exists()


def test_two_streaming_runs_never_write_one_output(tiny_unet2d, tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", image_u8((64, 64)))
    out = tmp_path / "out"
    args = (
        "predict",
        tiny_unet2d,
        tmp_path / "a.tif",
        "-o",
        out,
        "--stream",
        "--output-format",
        "ome-zarr",
        "-q",
    )
    holder = start(
        f"""
        import time
        from emzoo.atomic import OutputLock
        OutputLock({str(out / "a_prob.ome.zarr")!r}).acquire()
        print("ready", flush=True)
        time.sleep(120)
        """
    )
    try:
        result = run(*args)
        assert result.exit_code == 1
        assert f"emzoo process {holder.pid} is writing this output" in result.output
        assert not (out / "a_prob.ome.zarr").exists()
    finally:
        kill9(holder)
    result = run(*args)  # the lock of the dead run is taken over
    assert result.exit_code == 0, result.output
    assert everything(out)[0] == "a_prob.ome.zarr" and not any(".lock" in p for p in everything(out))
