"""Where outputs go and what happens to them: an output that is a file, read-only and full output
folders, re-runs (skip, --overwrite), outputs inside the input folder, concurrent runs, kill -9 in
the middle of a folder and of a streamed prediction, then a re-run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

from emzoo.drivers.provenance import RECORD_SUFFIX, record_path
from tests.reliability import builders as b
from tests.reliability.cases_inputs import files, good, outputs_exist, predict
from tests.reliability.harness import Case, Ctx, Result, Skip

# -- mechanisms: a small or read-only file system for the output folder -------------------------------

NO_MOUNT = os.environ.get("EMZOO_RELIABILITY_NO_MOUNT") == "1"  # force the injected ENOSPC

ENOSPC_SITE = '''
"""Injected by the reliability suite: a file opened for writing under EMZOO_TEST_ENOSPC_DIR is
created, but its writes go to /dev/full, so they fail with ENOSPC like on a full disk (also the
writes numpy and C libraries make on the file descriptor)."""
import builtins, errno, io, os

_DIR = os.environ.get("EMZOO_TEST_ENOSPC_DIR")

if _DIR:
    _DIR = os.path.realpath(_DIR)
    _open = io.open

    class _Full(io.FileIO):
        def truncate(self, size=None):  # growing a file (before a memory map) needs space too
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def _patched(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None, closefd=True,
                 opener=None):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
            path = os.path.realpath(os.fsdecode(file))
            if path.startswith(_DIR + os.sep):
                if "x" in mode and os.path.exists(path):
                    raise FileExistsError(17, "File exists", path)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY | (os.O_TRUNC if "w" in mode else 0), 0o666))
                raw = _Full("/dev/full", "r+")
                buffered = io.BufferedRandom(raw)
                if "b" in mode:
                    return buffered
                return io.TextIOWrapper(buffered, encoding=encoding, errors=errors, newline=newline)
        return _open(file, mode, buffering, encoding, errors, newline, closefd, opener)

    builtins.open = _patched
    io.open = _patched
'''


def case(id: str, what: str, args: tuple[str, ...] = (), exit=0, message: str | None = None, **kw) -> Case:
    """A case of this table (outputs; area A unless given)."""
    return Case(id, "outputs", what, args, exit, message, **{"area": "A", **kw})


def _mount_tmpfs(ctx: Ctx, folder: Path, options: str) -> bool:
    """Mount a tmpfs on ``folder`` (root with mount rights only); unmounted after the case."""
    folder.mkdir(parents=True, exist_ok=True)
    if NO_MOUNT or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        return False
    ctx.cleanups.append(lambda: subprocess.run(["umount", "-l", str(folder)], capture_output=True))
    return True


def full_disk(ctx: Ctx) -> None:
    """The output folder is a 64 KiB tmpfs, or (without mount rights) writes into it fail with an
    injected ENOSPC (``ENOSPC_SITE``)."""
    if _mount_tmpfs(ctx, ctx.out, "size=64k,mode=0755"):
        return
    site = ctx.dir / "inject"
    site.mkdir()
    (site / "sitecustomize.py").write_text(ENOSPC_SITE)
    ctx.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), ctx.env.get("PYTHONPATH")) if p)
    ctx.env["EMZOO_TEST_ENOSPC_DIR"] = str(ctx.out)


def read_only(ctx: Ctx, folder: Path) -> None:
    """``folder`` cannot be written: a read-only tmpfs (stops root too), else chmod (not as root)."""
    if _mount_tmpfs(ctx, folder, "ro,size=64k"):
        return
    if os.geteuid() == 0:
        raise Skip("running as root without mount rights: chmod does not stop root's writes")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    ctx.cleanups.append(lambda: folder.chmod(0o755))


# -- helpers -----------------------------------------------------------------------------------------


def finals(folder: Path) -> list[Path]:
    """The final outputs (no hidden names, no provenance records) under ``folder``."""
    return sorted(
        p
        for p in folder.rglob("*_prob*")
        if not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and not p.name.endswith(RECORD_SUFFIX)
        and not any(q.name.endswith(".zarr") for q in p.parents if q != folder and folder in q.parents)
    )


def stat_key(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_ino, st.st_mtime_ns


def same_as_reference(ctx: Ctx, out: Path, ref: Path) -> None:
    """Every reference output exists in ``out`` with the same values, and nothing more."""
    from emzoo.io import read_image

    names = sorted(p.relative_to(ref) for p in finals(ref))
    got = sorted(p.relative_to(out) for p in finals(out))
    ctx.expect(names == got, f"outputs {got} differ from the uninterrupted run's {names}")
    for rel in names:
        if (out / rel).exists():
            a, r = np.asarray(read_image(out / rel).data), np.asarray(read_image(ref / rel).data)
            ok = a.shape == r.shape and np.allclose(a, r, atol=1e-5, equal_nan=True)
            ctx.expect(ok, f"{rel}: differs from the uninterrupted run")


def wait_for(condition, seconds: float, proc: subprocess.Popen | None = None) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return condition()
        time.sleep(0.01)
    return False


def kill9(ctx: Ctx, proc: subprocess.Popen, start: float) -> Result:
    if proc.poll() is not None:
        ctx.fail("the run finished before it could be killed (the case needs more work to interrupt)")
    else:
        proc.send_signal(signal.SIGKILL)
    return ctx.finish(proc, start, killed=True)


def folder_of(n: int, size: int = 256):
    return files({f"in/{i:02d}.tif": good((size, size)) for i in range(n)})


# -- drivers -----------------------------------------------------------------------------------------


def rerun_skips(ctx: Ctx) -> Result:
    ctx.cli(*predict("in/a.tif"))
    before = stat_key(ctx.out / "a_prob.tif")
    result = ctx.cli(*predict("in/a.tif"))
    ctx.expect(stat_key(ctx.out / "a_prob.tif") == before, "the re-run rewrote the finished output")
    return result


def rerun_overwrites(ctx: Ctx) -> Result:
    ctx.cli(*predict("in/a.tif"))
    before = stat_key(ctx.out / "a_prob.tif")
    result = ctx.cli(*predict("in/a.tif", "--overwrite"))
    ctx.expect(stat_key(ctx.out / "a_prob.tif") != before, "--overwrite did not replace the output")
    return result


def rerun_into_input_folder(ctx: Ctx) -> Result:
    args = ("predict", "{model2d}", "in", "-o", "in/preds", "-q")
    ctx.cli(*args)
    result = ctx.cli(*args)
    again = [p.name for p in ctx.inp.rglob("*_prob_prob*")]
    ctx.expect(not again, f"outputs of the first run were predicted again: {again}")
    return result


def kill_mid_folder(ctx: Ctx) -> Result:
    ctx.cli("predict", "{model2d}", "in", "-o", "ref", "-q")
    start = time.perf_counter()
    proc = ctx.popen(*predict("in"))
    wait_for(lambda: len(finals(ctx.out)) >= 2, 90, proc)
    kill9(ctx, proc, start)
    # complete: with its provenance record (one killed between the two is predicted again)
    complete = {p: stat_key(p) for p in finals(ctx.out) if record_path(p).is_file()}
    result = ctx.cli(*predict("in"))
    rewritten = [p.name for p, key in complete.items() if not p.exists() or stat_key(p) != key]
    ctx.expect(not rewritten, f"outputs complete before the kill were computed again: {rewritten}")
    m = re.search(r"skipped: (\d+)", result.output)
    ctx.expect(
        m is not None and int(m.group(1)) == len(complete),
        f"the re-run should skip the {len(complete)} finished outputs ({m.group(0) if m else 'no summary'})",
    )
    same_as_reference(ctx, ctx.out, ctx.dir / "ref")
    return result


def _done_records(out: Path) -> int:
    return sum(len(list(d.glob("*"))) for d in out.glob(".*partial/.emzoo-stream/done"))


def kill_mid_stream(fmt: str):
    def driver(ctx: Ctx) -> Result:
        args = ("--stream", "--chunk-size", "128", "--output-format", fmt)
        ctx.cli("predict", "{model2d}", "in/big.tif", *args, "-o", "ref", "-q")
        start = time.perf_counter()
        proc = ctx.popen(*predict("in/big.tif", *args))
        wait_for(lambda: _done_records(ctx.out) >= 3, 90, proc)
        kill9(ctx, proc, start)
        done = _done_records(ctx.out)
        result = ctx.cli(*predict("in/big.tif", *args))
        m = re.search(r"resumed \S+: (\d+) of (\d+) chunks", result.output)
        ctx.expect(
            m is not None and int(m.group(1)) == done,
            f"the re-run should resume after the {done} finished chunks ({m.group(0) if m else 'no note'})",
        )
        same_as_reference(ctx, ctx.out, ctx.dir / "ref")
        return result

    return driver


def concurrent(*extra: str, lock_ok: bool = False):
    """Two runs of the same command at once: both succeed (or, with ``lock_ok``, one refuses with the
    lock message); the outputs equal an uninterrupted run's."""

    def driver(ctx: Ctx) -> Result:
        ctx.cli("predict", "{model2d}", "in", *extra, "-o", "ref", "-q")
        start = time.perf_counter()
        procs = [ctx.popen(*predict("in", *extra)) for _ in range(2)]
        results = [ctx.finish(p, start) for p in procs]
        codes = sorted(r.returncode for r in results)
        if lock_ok:
            ctx.expect(codes[0] == 0, f"neither concurrent run succeeded ({codes})")
            for r in results:
                if r.returncode == 1:
                    ctx.expect(
                        re.search(r"(?i)lock|is writing this output", r.output) is not None,
                        f"the refused run does not say the output is locked: {r.output[-300:]}",
                    )
            if codes[1] != 0:  # finish what the refused run left (nothing, normally)
                ctx.cli(*predict("in", *extra))
        else:
            ctx.expect(codes == [0, 0], f"concurrent runs ended with {codes}")
        same_as_reference(ctx, ctx.out, ctx.dir / "ref")
        return ctx.results[-1]

    return driver


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def no_outputs(ctx: Ctx, result: Result) -> None:
    ctx.expect(not ctx.out.exists() or not any(ctx.out.iterdir()), "outputs were written before the refusal")


def readable_output(name: str):
    def check(ctx: Ctx, result: Result) -> None:
        from emzoo.io import read_image

        path = ctx.out / name
        ctx.expect(path.exists(), f"expected output {name} is missing")
        if path.exists():
            ctx.expect(np.asarray(read_image(path).data).shape[-2:] == (64, 64), f"{name}: wrong shape")

    return check


GOOD = {"in/a.tif": good()}
BIG = {"in/big.tif": lambda p: b.tif(p, b.noise((1024, 1024)))}
NO_SPACE = r"(?i)no space left|disk is full|disk full"

CASES: list[Case] = [
    case(
        "out-is-a-file",
        "-o naming an existing file is a usage error",
        predict("in/a.tif"),
        2,
        r"(?i)out.*is a file",
        setup=lambda ctx: (files(GOOD)(ctx), b.text(ctx.out)),
    ),
    case(
        "out-parent-is-a-file",
        "-o below a file is refused with one line, nothing written",
        ("predict", "{model2d}", "in/a.tif", "-o", "blocker/sub", "-q"),
        (1, 2),
        r"blocker",
        setup=lambda ctx: (files(GOOD)(ctx), b.text(ctx.dir / "blocker")),
    ),
    case(
        "out-read-only",
        "a read-only output folder: one line, nothing half-written",
        predict("in/a.tif"),
        (1, 2),
        r"(?i)read-only|permission|not writable|cannot write",
        setup=lambda ctx: (files(GOOD)(ctx), read_only(ctx, ctx.out)),
    ),
    case(
        "out-read-only-parent",
        "an output folder that cannot be created (read-only parent): one line",
        ("predict", "{model2d}", "in/a.tif", "-o", "out/new", "-q"),
        (1, 2),
        r"(?i)read-only|permission|not writable|cannot write|cannot create",
        setup=lambda ctx: (files(GOOD)(ctx), read_only(ctx, ctx.out)),
    ),
    case(
        "out-full-disk-tif",
        "a full disk while writing a TIFF: one line saying so, no partial file",
        predict(str(b.EXAMPLE)),
        1,
        NO_SPACE,
        setup=full_disk,
    ),
    case(
        "out-full-disk-npy",
        "a full disk while writing .npy: one line saying so, no partial file",
        predict(str(b.EXAMPLE), "--output-format", "npy"),
        1,
        NO_SPACE,
        setup=full_disk,
    ),
    case(
        "out-full-disk-mrc",
        "a full disk while writing MRC: one line saying so, no partial file",
        predict("in/a.mrc"),
        1,
        NO_SPACE,
        setup=lambda ctx: (
            files({"in/a.mrc": lambda p: b.mrc(p, b.noise((512, 512), np.float32))})(ctx),
            full_disk(ctx),
        ),
    ),
    case(
        "out-full-disk-stream",
        "a full disk during a streamed prediction: one line saying so",
        predict("in/big.tif", "--stream", "--chunk-size", "256"),
        1,
        NO_SPACE,
        setup=lambda ctx: (files(BIG)(ctx), full_disk(ctx)),
    ),
    case(
        "out-rerun-skips",
        "a re-run skips the finished output and leaves it untouched",
        driver=rerun_skips,
        exit=0,
        message=r"done: 0, skipped: 1, failed: 0",
        setup=files(GOOD),
    ),
    case(
        "out-overwrite",
        "--overwrite replaces the finished output (atomically)",
        driver=rerun_overwrites,
        exit=0,
        message=r"done: 1, skipped: 0, failed: 0",
        setup=files(GOOD),
    ),
    case(
        "out-inside-input-rerun",
        "-o inside the input folder, run twice: the outputs are not predicted as inputs",
        driver=rerun_into_input_folder,
        exit=0,
        message=r"done: 0",
        setup=files({"in/a.tif": good(), "in/b.tif": good()}),
        outputs=("in/preds",),
    ),
    case(
        "out-same-as-input",
        "-o the input folder, where an output name is an input: the input is never replaced",
        ("predict", "{model2d}", "in", "-o", "in", "-q"),
        1,
        r"(?i)replace an input|would overwrite",
        setup=files({"in/a.tif": good(), "in/a_prob.tif": good()}),
        outputs=("in",),
    ),
    case(
        "out-glob-traversal",
        "a glob through .. never puts an output outside -o",
        predict("in/*/../../*.tif"),
        (0, 1),
        r"done: ",
        setup=files({"a.tif": good(), "in/sub/b.tif": good()}),
    ),
    case(
        "out-stale-partial",
        "a partial file of a killed run is cleaned up by the next run",
        predict("in/a.tif"),
        0,
        r"done: 1",
        setup=lambda ctx: (
            files(GOOD)(ctx),
            b.text(ctx.out / f".a_prob.tif.partial-{dead_pid()}", "half"),
        ),
    ),
    *(
        case(
            f"out-format-{fmt}",
            f"--output-format {fmt} writes a readable output",
            predict("in/a.tif", "--output-format", fmt),
            0,
            r"done: 1",
            setup=files(GOOD),
            check=readable_output(name),
        )
        for fmt, name in (
            ("tiff", "a_prob.tif"),
            ("npy", "a_prob.npy"),
            ("mrc", "a_prob.mrc"),
            ("ome-zarr", "a_prob.ome.zarr"),
            ("png", "a_prob.png"),
        )
    ),
    case(
        "out-subfolders-kept",
        "outputs keep the input folder's sub-folders",
        predict("in"),
        0,
        r"done: 2",
        setup=files({"in/x/a.tif": good(), "in/x/y/b.tif": good()}),
        check=outputs_exist("x/a_prob.tif", "x/y/b_prob.tif"),
    ),
    case(
        "out-concurrent-folder",
        "two runs into the same output folder at once: both succeed, outputs complete and equal",
        driver=concurrent(),
        exit=0,
        setup=folder_of(12),
        scratch=("ref",),
        serial=True,
    ),
    case(
        "out-concurrent-stream",
        "two streamed runs into the same output at once: one may refuse (locked), the output is right",
        driver=concurrent("--stream", "--chunk-size", "128", lock_ok=True),
        exit=0,
        setup=files({"in/big.tif": lambda p: b.tif(p, b.noise((512, 512)))}),
        scratch=("ref",),
        serial=True,
    ),
    case(
        "out-kill9-folder",
        "kill -9 in the middle of a folder, re-run: finished outputs kept, the rest equals a clean run",
        driver=kill_mid_folder,
        exit=0,
        setup=folder_of(30),
        scratch=("ref",),
        serial=True,
    ),
    case(
        "out-kill9-stream-tif",
        "kill -9 in the middle of a streamed prediction, re-run: resumes, result equals a clean run",
        driver=kill_mid_stream("tiff"),
        exit=0,
        setup=files(BIG),
        scratch=("ref",),
        serial=True,
    ),
    case(
        "out-kill9-stream-zarr",
        "kill -9 in the middle of a streamed OME-Zarr output, re-run: resumes, equals a clean run",
        driver=kill_mid_stream("ome-zarr"),
        exit=0,
        setup=files(BIG),
        scratch=("ref",),
        serial=True,
    ),
]
