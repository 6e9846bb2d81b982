"""The case record, running one case, and the checks every case gets.

A :class:`Case` names what it does, the ``emzoo`` command (arguments after ``emzoo``, with ``{name}``
placeholders: ``{dir}`` the case folder, ``{in}``, ``{out}``, and the session resources such as
``{model2d}``), the exit code(s) it must end with, a regex its output must match, and optionally a
``setup`` (make the inputs), a ``driver`` (several commands: re-runs, kill -9, concurrent runs) and
a ``check`` (more assertions). Every case is run in its own folder (the subprocess' cwd) with a
controlled environment, and is judged on:

* the exit code and the message regex;
* no ``Traceback (most recent call last)`` in stdout or stderr, of any command it ran;
* no hang (each command has a timeout);
* its output folders afterwards: no zero-byte file, no temporary (``.partial``) file or store where a
  run ended (a resumable streaming store may stay after a failed run), every file under a final name
  readable (images with ``emzoo.io.read_image``, CSV and JSON parsed); nothing written outside them;
* every file that existed before the command byte-identical after it (sha256);
* for hostile packages: the marker their code leaves when it runs is absent (or, for the positive
  controls that trust the package, present).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.reliability.builders import MARKER_ENV, Resources

TRACEBACK = "Traceback (most recent call last)"
ATOMIC_TEMP = re.compile(r"\.partial-\d+$")
MAX_READ_BYTES = 256 * 1024**2
OUTCOMES: dict[str, Outcome] = {}  # every case run in this session, for the summary (conftest.py)


class Skip(Exception):
    """The case cannot run here (the reason says why); the test is skipped."""


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    killed: bool = False  # ended by the case itself (kill -9): not a hang, exit code not judged
    cpu: float = 0.0  # CPU seconds of the process and its children

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    what: str
    args: tuple[str, ...] = ()
    exit: int | tuple[int, ...] = 0
    message: str | None = None
    setup: Callable[[Ctx], None] | None = None
    driver: Callable[[Ctx], Result] | None = None
    check: Callable[[Ctx, Result], None] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 90.0
    marker: bool | None = None  # False: hostile code must not run; True: trusted code must run
    outputs: tuple[str, ...] = ("out",)  # folders (relative to the case folder) that hold outputs
    scratch: tuple[str, ...] = ()  # more folders the case may write to (reference runs)
    serial: bool = False  # timing-sensitive (kill -9, concurrent runs): run alone
    area: str = ""  # who owns the behaviour: A (files/IO), B (security), C (runtime), T (training...)

    @property
    def exits(self) -> tuple[int, ...]:
        return self.exit if isinstance(self.exit, tuple) else (self.exit,)


class Ctx:
    """One case's folder, environment and commands."""

    def __init__(self, case: Case, folder: Path, resources: Resources, base_env: Mapping[str, str]):
        self.case = case
        self.dir = folder
        self.res = resources
        self.marker = folder / "MARKER"
        self.env = {**base_env, **case.env, MARKER_ENV: str(self.marker)}
        self.results: list[Result] = []
        self.problems: list[str] = []
        self.cleanups: list[Callable[[], None]] = []

    @property
    def inp(self) -> Path:
        return self.dir / "in"

    @property
    def out(self) -> Path:
        return self.dir / "out"

    def fail(self, message: str) -> None:
        self.problems.append(message)

    def expect(self, condition: bool, message: str) -> None:
        if not condition:
            self.fail(message)

    def fmt(self, arg: str) -> str:
        return arg.format_map(_Placeholders(self))

    def command(self, args) -> list[str]:
        return [sys.executable, "-m", "emzoo", *(self.fmt(str(a)) for a in args)]

    def cli(self, *args: str, timeout: float | None = None, env: Mapping[str, str] | None = None) -> Result:
        start = time.perf_counter()
        proc = self.popen(*args, env=env)
        return self.finish(proc, start, timeout=timeout)

    def popen(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(args),
            cwd=self.dir,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            stdin=subprocess.DEVNULL,
        )

    def finish(self, proc: subprocess.Popen, start: float, *, killed: bool = False, timeout=None) -> Result:
        """Collect a :meth:`popen` process (killed after the case's timeout), with its CPU time."""
        code, out, err, timed_out, cpu = collect(proc, timeout or self.case.timeout)
        args = tuple(str(a) for a in proc.args[3:])
        result = Result(args, code, out, err, _since(start), timed_out, killed, cpu)
        self.results.append(result)
        return result


def collect(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str, bool, float]:
    """``(exit code, stdout, stderr, timed out, CPU seconds)`` of a process (and its children)."""
    parts: dict[str, list[str]] = {"out": [], "err": []}

    def pump(stream, key: str) -> None:
        for data in iter(lambda: stream.read(65536), ""):
            parts[key].append(data)

    readers = [
        threading.Thread(target=pump, args=(proc.stdout, "out"), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, "err"), daemon=True),
    ]
    for t in readers:
        t.start()
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        with contextlib.suppress(ProcessLookupError):
            proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join()
    return (
        proc.returncode,
        "".join(parts["out"]),
        "".join(parts["err"]),
        expired.is_set(),
        usage.ru_utime + usage.ru_stime,
    )


class _Placeholders(dict):
    def __init__(self, ctx: Ctx):
        super().__init__()
        self.ctx = ctx

    def __missing__(self, key: str) -> str:
        fixed = {"dir": self.ctx.dir, "in": self.ctx.inp, "out": self.ctx.out, "marker": self.ctx.marker}
        if key in fixed:
            return str(fixed[key])
        return str(self.ctx.res.get(key))


def _since(start: float) -> float:
    return time.perf_counter() - start


# -- the outcome -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    id: str
    category: str
    area: str
    what: str
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # of the emzoo processes the case ran
    exit_code: int | None = None
    expected: tuple[int, ...] = ()
    tail: str = ""
    skipped: str | None = None
    traceback: bool = False
    wrong_exit: bool = False
    wrong_message: bool = False
    hang: bool = False
    half_written: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    inputs_changed: list[str] = field(default_factory=list)
    untrusted_code: bool = False
    problems: list[str] = field(default_factory=list)  # failed extra checks, errors of the harness

    @property
    def passed(self) -> bool:
        return not (
            self.traceback
            or self.wrong_exit
            or self.wrong_message
            or self.hang
            or self.half_written
            or self.outside
            or self.inputs_changed
            or self.untrusted_code
            or self.problems
        )

    def report(self, message: str | None = None) -> str:
        lines = [f"case {self.id} ({self.category}, area {self.area}): {self.what}"]
        if self.hang:
            lines.append("  HANG: a command ran past its timeout")
        if self.traceback:
            lines.append("  a traceback was printed")
        if self.wrong_exit:
            lines.append(f"  exit code {self.exit_code}, expected {' or '.join(map(str, self.expected))}")
        if self.wrong_message:
            lines.append(f"  the output does not match {message!r}")
        lines += [f"  half-written output: {p}" for p in self.half_written]
        lines += [f"  written outside the output folder: {p}" for p in self.outside]
        lines += [f"  input changed: {p}" for p in self.inputs_changed]
        if self.untrusted_code:
            lines.append("  code from an untrusted package ran (its marker file exists)")
        lines += [f"  {p}" for p in self.problems]
        lines.append("  output (last lines):")
        lines += ["    " + line for line in self.tail.splitlines()]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["passed"] = self.passed
        d["expected"] = list(self.expected)
        return d


def record(outcome: Outcome) -> None:
    OUTCOMES[outcome.id] = outcome


# -- running one case --------------------------------------------------------------------------------


def run_case(case: Case, folder: Path, resources: Resources, base_env: Mapping[str, str]) -> Outcome:
    outcome = Outcome(case.id, case.category, case.area, case.what, expected=case.exits)
    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(case, folder, resources, base_env)
    try:
        if case.setup is not None:
            case.setup(ctx)
        ignored = [folder / o for o in case.outputs] + [folder / s for s in case.scratch]
        before = snapshot(folder, exclude=[folder / "out", *(folder / s for s in case.scratch)])
        listing_before = set(all_paths(folder))
        result = case.driver(ctx) if case.driver is not None else ctx.cli(*case.args)
        outcome.exit_code = result.returncode
        outcome.tail = "\n".join(result.output.strip().splitlines()[-15:])
        outcome.hang = any(r.timed_out for r in ctx.results)
        outcome.traceback = any(TRACEBACK in r.output for r in ctx.results)
        outcome.wrong_exit = not result.timed_out and result.returncode not in case.exits
        if case.message is not None:
            outcome.wrong_message = re.search(case.message, result.output, re.S) is None
        for rel in case.outputs:
            outcome.half_written += bad_outputs(folder / rel, set(before), ended_well=result.returncode == 0)
        outcome.outside = [
            str(p.relative_to(folder))
            for p in sorted(set(all_paths(folder)) - listing_before)
            if p != ctx.marker and not any(p == d or d in p.parents for d in ignored)
        ]
        outcome.inputs_changed = changed(before, snapshot(folder, exclude=[]))
        if case.marker is False and ctx.marker.exists():
            outcome.untrusted_code = True
        if case.marker is True and not ctx.marker.exists():
            ctx.fail("positive control: the trusted package's code did not run (no marker file)")
        if case.check is not None:
            case.check(ctx, result)
    except Skip as e:
        outcome.skipped = str(e)
    except AssertionError as e:
        ctx.fail(f"check failed: {e}")
    except Exception as e:  # a broken case or builder: report it, as a failure of this case
        import traceback

        ctx.fail(f"the case itself failed: {type(e).__name__}: {e}\n{traceback.format_exc()}")
    finally:
        for cleanup in reversed(ctx.cleanups):
            try:
                cleanup()
            except Exception as e:
                ctx.fail(f"cleanup failed: {e}")
    outcome.problems += ctx.problems
    outcome.seconds = round(time.perf_counter() - start, 2)
    outcome.cpu_seconds = round(sum(r.cpu for r in ctx.results), 2)
    return outcome


# -- the checks --------------------------------------------------------------------------------------


def all_paths(root: Path) -> list[Path]:
    """Every file, link and folder under ``root`` (links are not followed)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        found += [d / n for n in dirnames + filenames]
    return found


def snapshot(root: Path, exclude: list[Path]) -> dict[Path, str]:
    """sha256 of every file under ``root`` (link targets for links), outside ``exclude``."""
    found = {}
    for p in all_paths(root):
        if any(p == e or e in p.parents for e in exclude):
            continue
        if p.is_symlink():
            found[p] = "link -> " + os.readlink(p)
        elif p.is_file():
            found[p] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def changed(before: dict[Path, str], after: dict[Path, str]) -> list[str]:
    return [
        f"{p.name}: {'removed' if p not in after else 'content changed'}"
        for p, digest in before.items()
        if after.get(p) != digest
    ]


def _image_suffixes() -> tuple[str, ...]:
    from emzoo.io.lookup import supported_suffixes

    return tuple(sorted(supported_suffixes(), key=len, reverse=True))


def readable(path: Path) -> str | None:
    """Why ``path`` (a final output) cannot be read, or None."""
    name = path.name.lower()
    try:
        if name.endswith(_image_suffixes()) or path.is_dir():
            from emzoo.io import read_image

            image = read_image(path)
            nbytes = int(np.prod(image.shape)) * np.dtype(image.data.dtype).itemsize
            if nbytes <= MAX_READ_BYTES:
                np.asarray(image.data).sum()
        elif name.endswith(".csv"):
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            if not rows:
                return "empty CSV"
        elif name.endswith(".json"):
            json.loads(path.read_text())
        elif name.endswith(".pt"):
            import torch

            torch.load(path, map_location="cpu", weights_only=True)
        elif name.endswith(".xml"):
            import xml.etree.ElementTree as ET

            ET.parse(path)
    except Exception as e:
        return f"{type(e).__name__}: {str(e)[:200]}"
    return None


def bad_outputs(root: Path, before: set[Path], *, ended_well: bool) -> list[str]:
    """Zero-byte, temporary, or unreadable files under ``root``, that did not exist before."""
    if not root.exists():
        return []
    problems = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        keep = []
        for name in dirnames:
            p = d / name
            rel = p.relative_to(root)
            if ".partial" in name:
                if ended_well or ATOMIC_TEMP.search(name):
                    problems.append(f"{rel}: a temporary folder is left")
            elif name.lower().endswith(".zarr"):
                if not any(q in before for q in p.rglob("*")) and (why := readable(p)):
                    problems.append(f"{rel}: unreadable ({why})")
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            p = d / name
            rel = p.relative_to(root)
            if p in before or p.is_symlink():
                continue
            if ".partial" in name:
                if ended_well or ATOMIC_TEMP.search(name):
                    problems.append(f"{rel}: a temporary file is left")
            elif name.startswith(".") and name.endswith(".lock"):
                if ended_well:
                    problems.append(f"{rel}: a lock file is left")
            elif p.stat().st_size == 0:
                problems.append(f"{rel}: zero bytes")
            elif why := readable(p):
                problems.append(f"{rel}: unreadable ({why})")
    return problems
