"""Provenance records under faults (:mod:`emzoo.drivers.provenance`): the process kills itself
(SIGKILL) just before its k-th rename into the output folder, for every k a whole run makes, so every
state a kill can leave between two renames is reached; then a re-run. Never a record without its
files, never a record that vouches for something else; outputs without their record are predicted
again, complete ones are skipped; the end equals an uninterrupted run's, records included. Also: a
missing record, an orphan record, a kill in the middle of a stream, and ``emzoo info OUTPUT``."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np

from emzoo.drivers.provenance import RECORD_SUFFIX, from_store, record_path
from tests.reliability import builders as b
from tests.reliability.cases_inputs import files, good, predict
from tests.reliability.cases_outputs import finals, kill9, same_as_reference, stat_key, wait_for
from tests.reliability.harness import Case, Ctx, Result

KILL_SITE = '''
"""Injected by the reliability suite: the process SIGKILLs itself just before its
EMZOO_TEST_KILL_AT-th rename into EMZOO_TEST_KILL_DIR (a file or store there, or the attributes file
of a store there); EMZOO_TEST_KILL_COUNT receives the number of such renames of a whole run."""
import atexit, os, signal

_DIR = os.environ.get("EMZOO_TEST_KILL_DIR")

if _DIR:
    _DIR = os.path.realpath(_DIR)
    _AT = int(os.environ.get("EMZOO_TEST_KILL_AT", "0"))
    _SEEN = [0]
    _replace, _rename = os.replace, os.rename

    def _count(dst):
        path = os.path.abspath(os.fsdecode(dst))
        parent = os.path.realpath(os.path.dirname(path))
        inside = os.path.dirname(parent) == _DIR and os.path.basename(path) in (".zattrs", "zarr.json")
        if parent == _DIR or inside:
            _SEEN[0] += 1
            if _SEEN[0] == _AT:
                os.kill(os.getpid(), signal.SIGKILL)

    def _replacing(src, dst, *args, **kwargs):
        _count(dst)
        return _replace(src, dst, *args, **kwargs)

    def _renaming(src, dst, *args, **kwargs):
        _count(dst)
        return _rename(src, dst, *args, **kwargs)

    os.replace, os.rename = _replacing, _renaming
    _OUT = os.environ.get("EMZOO_TEST_KILL_COUNT")
    if _OUT:
        atexit.register(lambda: open(_OUT, "w").write(str(_SEEN[0])))
'''


def case(id: str, what: str, args: tuple[str, ...] = (), exit=0, message: str | None = None, **kw) -> Case:
    """A case of this table (provenance; area A unless given)."""
    return Case(id, "provenance", what, args, exit, message, **{"area": "A", **kw})


def _records(out: Path) -> dict[Path, dict]:
    return {p: json.loads(p.read_text()) for p in sorted(out.rglob("*" + RECORD_SUFFIX))}


def _vouches_only_for_what_exists(ctx: Ctx, when: str) -> None:
    """Every record parses and lists files that all exist (none without its outputs)."""
    for path, record in _records(ctx.out).items():
        missing = [f for f in record["files"] if not (path.parent / f).exists()]
        ctx.expect(not missing, f"{when}: {path.name} lists files that do not exist: {missing}")


def _complete(ctx: Ctx, folder: Path, per_input: int) -> None:
    """Every output has its record, which lists the input's ``per_input`` files and the right hashes."""
    outputs = finals(folder)
    for output in outputs:
        if output.name.endswith(".preview.png"):
            continue
        path = record_path(output)
        if not path.is_file():
            ctx.fail(f"{output.name}: no provenance record")
            continue
        record = json.loads(path.read_text())
        ctx.expect(len(record["files"]) == per_input, f"{path.name}: files {record['files']}")
        ctx.expect(output.name in record["files"], f"{path.name} does not list {output.name}")
        source = Path(record["input"]["path"])
        if source.is_file():
            ctx.expect(record["input"]["sha256"] == b.sha256(source), f"{path.name}: wrong input sha256")
        ctx.expect(
            record["model"]["sha256"] == b.sha256(ctx.res.get("model2d")), f"{path.name}: model sha256"
        )
        ctx.expect(record["processing"]["tensors"], f"{path.name}: no normalisation statistics")


def _recorded(output: Path) -> bool:
    """Complete: its record is beside it, or in its attributes with every file it lists."""
    if record_path(output).is_file():
        return True
    record = from_store(output) if output.is_dir() else None
    return record is not None and all((output.parent / f).exists() for f in record["files"])


def _killing(ctx: Ctx, at: int, count: Path | None = None) -> dict[str, str]:
    """The environment of a run that kills itself before its ``at``-th rename (0: never)."""
    site = ctx.dir / "inject"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(KILL_SITE)
    path = os.pathsep.join(p for p in (str(site), ctx.env.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": path, "EMZOO_TEST_KILL_DIR": str(ctx.out), "EMZOO_TEST_KILL_AT": str(at)}
    return {**env, "EMZOO_TEST_KILL_COUNT": str(count)} if count is not None else env


def _clear(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def kill_at_every_rename(args: tuple[str, ...], per_input: int):
    """For k = 1..N (N: the renames of a whole run): a run killed just before its k-th rename, the
    state it leaves checked, then a plain re-run that must skip exactly the inputs whose record was
    complete and end equal to an uninterrupted run."""

    def driver(ctx: Ctx) -> Result:
        ctx.cli(*args, "-o", "ref", "-q")
        count = ctx.dir / "inject" / "renames"
        ctx.cli(*args, "-o", "out", "-q", env=_killing(ctx, 0, count))
        total = int(count.read_text())
        ctx.expect(total >= 2, f"only {total} renames into the output folder")
        result = ctx.results[-1]
        for at in range(1, total + 1):
            _clear(ctx.out)
            killed = ctx.cli(*args, "-o", "out", "-q", env=_killing(ctx, at))
            ctx.expect(
                killed.returncode == -9, f"kill at rename {at}: the run was not killed ({killed.returncode})"
            )
            _vouches_only_for_what_exists(ctx, f"killed at rename {at}")
            complete = {p: stat_key(p) for p in finals(ctx.out) if _recorded(p)}
            recorded = {record_path(p) for p in complete}
            result = ctx.cli(*args, "-o", "out", "-q")
            ctx.expect(result.returncode == 0, f"re-run after a kill at rename {at}: {result.output[-300:]}")
            kept = [p.name for p, key in complete.items() if p.exists() and stat_key(p) == key]
            ctx.expect(len(kept) == len(complete), f"kill at {at}: complete outputs rewritten")
            m = re.search(r"skipped: (\d+)", result.output)
            skipped = int(m.group(1)) if m else -1
            ctx.expect(skipped == len(recorded), f"kill at {at}: skipped {skipped}, complete {len(recorded)}")
            same_as_reference(ctx, ctx.out, ctx.dir / "ref")
            _complete(ctx, ctx.out, per_input)
        return result

    return driver


def missing_record_redone(ctx: Ctx) -> Result:
    ctx.cli(*predict("in/a.tif"))
    record_path(ctx.out / "a_prob.tif").unlink()
    result = ctx.cli(*predict("in/a.tif"))
    ctx.expect(record_path(ctx.out / "a_prob.tif").is_file(), "the record was not written again")
    return result


def orphan_record_cleaned(ctx: Ctx) -> Result:
    ctx.cli(*predict("in/a.tif"))
    before = json.loads(record_path(ctx.out / "a_prob.tif").read_text())["started"]
    (ctx.out / "a_prob.tif").unlink()
    result = ctx.cli(*predict("in/a.tif"))
    ctx.expect((ctx.out / "a_prob.tif").is_file(), "the output was not predicted again")
    after = json.loads(record_path(ctx.out / "a_prob.tif").read_text())["started"]
    ctx.expect(after != before, "the orphan record was kept instead of written anew")
    return result


def kill_mid_stream_records(ctx: Ctx) -> Result:
    """kill -9 after some chunks; the resumed run's record keeps the statistics of the first run."""
    args = ("--stream", "--chunk-size", "128", "--output-format", "ome-zarr")
    start = time.perf_counter()
    proc = ctx.popen(*predict("in/big.tif", *args))

    def done() -> int:
        return sum(len(list(d.glob("*"))) for d in ctx.out.glob(".*partial/.emzoo-stream/done"))

    wait_for(lambda: done() >= 3, 90, proc)
    kill9(ctx, proc, start)
    _vouches_only_for_what_exists(ctx, "killed mid-stream")
    before = done()
    result = ctx.cli(*predict("in/big.tif", *args))
    record = json.loads(record_path(ctx.out / "big_prob.ome.zarr").read_text())
    stream = record["runtime"]["stream"]
    ctx.expect(stream["done_before"] == before, f"done_before {stream['done_before']}, {before} done")
    ctx.expect(bool(record["processing"]["tensors"]), "the resumed record has no statistics")
    attrs = json.loads((ctx.out / "big_prob.ome.zarr" / ".zattrs").read_text())
    ctx.expect(attrs.get("emzoo", {}).get("provenance") == record, "the store's attributes differ")
    return result


def info_of_an_output(ctx: Ctx) -> Result:
    ctx.cli(*predict("in/a.tif", "--preview"))
    digest = b.sha256(ctx.inp / "a.tif")[:12]
    result = ctx.cli("info", "out/a_prob.preview.png")
    ctx.expect(digest in result.output, f"the input's sha256 {digest} is not shown")
    return result


BIG = {"in/big.tif": lambda p: b.tif(p, b.noise((1024, 1024)))}
TWO = {"in/a.tif": good((96, 96)), "in/b.tif": good((80, 64), np.uint16)}
MODEL = "{model2d}"

CASES: list[Case] = [
    case(
        "prov-kill-every-rename-folder",
        "a folder with previews, killed before each rename into the output folder, then re-run",
        driver=kill_at_every_rename(("predict", MODEL, "in", "--preview"), per_input=2),
        exit=0,
        setup=files(TWO),
        scratch=("ref", "inject"),
        timeout=300,
    ),
    case(
        "prov-kill-every-rename-stream-tif",
        "a streamed TIFF output, killed before each rename into the output folder, then re-run",
        driver=kill_at_every_rename(("predict", MODEL, "in/a.tif", "--stream", "--chunk-size", "64"), 1),
        exit=0,
        setup=files(TWO),
        scratch=("ref", "inject"),
        timeout=300,
    ),
    case(
        "prov-kill-every-rename-stream-zarr",
        "a streamed OME-Zarr output, killed before each rename (store, attributes, record), re-run",
        driver=kill_at_every_rename(
            ("predict", MODEL, "in/a.tif", "--stream", "--chunk-size", "64", "--output-format", "zarr"), 1
        ),
        exit=0,
        setup=files(TWO),
        scratch=("ref", "inject"),
        timeout=300,
    ),
    case(
        "prov-missing-record",
        "an output whose record is gone is incomplete: predicted again, the record written",
        driver=missing_record_redone,
        exit=0,
        message=r"done: 1, skipped: 0, failed: 0",
        setup=files({"in/a.tif": good()}),
    ),
    case(
        "prov-orphan-record",
        "a record whose output is gone is removed and the input predicted again",
        driver=orphan_record_cleaned,
        exit=0,
        message=r"done: 1, skipped: 0, failed: 0",
        setup=files({"in/a.tif": good()}),
    ),
    case(
        "prov-kill9-stream",
        "kill -9 in the middle of a streamed OME-Zarr output, re-run: the record has the statistics",
        driver=kill_mid_stream_records,
        exit=0,
        setup=files(BIG),
        serial=True,
    ),
    case(
        "prov-info-output",
        "emzoo info on a preview shows the record of its input (model, input sha256, statistics)",
        driver=info_of_an_output,
        exit=0,
        message=r"predicted by tiny unet2d.*input raw: .*a\.tif.*normalisation statistics.*scale_range",
        setup=files({"in/a.tif": good()}),
    ),
]
