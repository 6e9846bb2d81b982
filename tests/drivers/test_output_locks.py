"""The lock of an output (``.NAME.lock``): one writer at a time, the holder named, stale locks of dead
processes taken over; the partials of killed writers removed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from emzoo.atomic import LockedError, OutputLock, atomic_path, lock_path, output_lock, remove_stale_partials


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_lock_is_held_and_released(tmp_path):
    target = tmp_path / "x.ome.zarr"
    with output_lock(target):
        holder = json.loads(lock_path(target).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert not lock_path(target).exists()


def test_a_live_holder_is_named(tmp_path):
    target = tmp_path / "x.ome.zarr"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import time\nfrom emzoo.atomic import OutputLock\n"
         f"OutputLock({str(target)!r}).acquire(); print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(
            LockedError, match=rf"x.ome.zarr: emzoo process {holder.pid} is writing this output"
        ):
            OutputLock(target).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = OutputLock(target).acquire()  # its process is gone: taken over
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    lock.release()


def test_a_stale_lock_is_taken_over_and_another_hosts_is_not(tmp_path):
    target = tmp_path / "x.tif"
    lock_path(target).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    with output_lock(target):
        assert json.loads(lock_path(target).read_text())["pid"] == os.getpid()
    lock_path(target).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(LockedError, match="emzoo process 1 on elsewhere is writing"):
        OutputLock(target).acquire()
    assert lock_path(target).exists()  # not ours to remove


def test_partials_of_dead_writers_are_removed_before_a_write(tmp_path):
    target = tmp_path / "x.tif"
    dead = tmp_path / f".x.tif.partial-{_dead_pid()}"
    other = tmp_path / f".y.tif.partial-{_dead_pid()}"  # another output's: not this write's business
    dead.write_text("half")
    other.write_text("half")
    (tmp_path / f".x.tif.partial-{os.getppid()}").write_text("live")
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and not dead.exists() and other.exists()
    assert remove_stale_partials(tmp_path / "y.tif") == [other]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".x.tif.partial-{os.getppid()}", "x.tif"]
