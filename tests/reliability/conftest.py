"""The reliability suite's session: shared resources, a small pool that runs the cases' subprocesses
two at a time (``EMZOO_RELIABILITY_JOBS``), and the table summary (printed at the end of the run and
written to ``reliability-summary.json`` in pytest's base temporary folder)."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import pytest

from tests.reliability.builders import Resources, env_without_emzoo
from tests.reliability.harness import OUTCOMES, Case, Outcome, run_case

JOBS = max(1, int(os.environ.get("EMZOO_RELIABILITY_JOBS", "2")))
_SUMMARY: dict[str, Path] = {}


class CasePool:
    """Runs the selected cases in the background, in test order; serial cases run alone."""

    def __init__(self, resources: Resources, base: Path, env: dict[str, str], cases: list[Case]):
        self.resources, self.base, self.env = resources, base, env
        self.executor = ThreadPoolExecutor(max_workers=JOBS, thread_name_prefix="case")
        self.futures: dict[str, Future] = {}
        self.lock = threading.Lock()
        for case in sorted(cases, key=lambda c: not _heavy(c)):  # long ones first: the pool ends evenly
            if not case.serial:
                self.futures[case.id] = self.executor.submit(self._run, case)

    def _run(self, case: Case) -> Outcome:
        return run_case(case, self.base / case.id, self.resources, self.env)

    def outcome(self, case: Case) -> Outcome:
        if case.id in self.futures:
            return self.futures[case.id].result()
        wait(list(self.futures.values()))  # timing-sensitive cases run with nothing else going on
        with self.lock:
            return self._run(case)

    def close(self) -> None:
        for f in self.futures.values():
            f.cancel()
        self.executor.shutdown(wait=True)


def _heavy(case: Case) -> bool:
    """Cases that load torch or bioimageio (train, test, package, validate) or validate a changed
    package description."""
    return case.category in ("packages", "training") or (case.args[:1] in (("train",), ("test",)))


@pytest.fixture(scope="session")
def resources(tiny_unet2d, tiny_unet3d, tmp_path_factory) -> Resources:
    base = tmp_path_factory.mktemp("reliability-resources")
    return Resources(base, {"model2d": tiny_unet2d, "model3d": tiny_unet3d})


@pytest.fixture(scope="session")
def case_pool(request, resources, tmp_path_factory):
    selected = [
        item.callspec.params["case"]
        for item in request.session.items
        if hasattr(item, "callspec") and isinstance(item.callspec.params.get("case"), Case)
    ]
    env = {**env_without_emzoo(), "EMZOO_CACHE_DIR": os.environ["EMZOO_CACHE_DIR"], "PYTHONUNBUFFERED": "1"}
    pool = CasePool(resources, tmp_path_factory.mktemp("reliability-cases"), env, selected)
    _SUMMARY["path"] = tmp_path_factory.getbasetemp() / "reliability-summary.json"
    yield pool
    pool.close()


def summary() -> dict:
    ran = [o for o in OUTCOMES.values() if o.skipped is None]
    by_category: dict[str, dict[str, int]] = {}
    for o in OUTCOMES.values():
        row = by_category.setdefault(
            o.category, {"cases": 0, "passed": 0, "failed": 0, "skipped": 0, "cpu_seconds": 0.0}
        )
        row["cases"] += 1
        row["skipped" if o.skipped else "passed" if o.passed else "failed"] += 1
        row["cpu_seconds"] = round(row["cpu_seconds"] + o.cpu_seconds, 1)
    return {
        "cases": len(ran),
        "skipped": len(OUTCOMES) - len(ran),
        "passed": sum(o.passed for o in ran),
        "tracebacks": sum(o.traceback for o in ran),
        "wrong_exit_codes": sum(o.wrong_exit for o in ran),
        "wrong_messages": sum(o.wrong_message for o in ran),
        "half_written_outputs": sum(bool(o.half_written) for o in ran),
        "written_outside_output": sum(bool(o.outside) for o in ran),
        "inputs_changed": sum(bool(o.inputs_changed) for o in ran),
        "untrusted_code_executed": sum(o.untrusted_code for o in ran),
        "hangs": sum(o.hang for o in ran),
        "other_failed_checks": sum(bool(o.problems) for o in ran),
        "cpu_seconds": round(sum(o.cpu_seconds for o in ran), 1),  # of the emzoo subprocesses
        "by_category": by_category,
        "failed": {o.id: o.area for o in ran if not o.passed},
        "outcomes": [o.as_dict() for o in OUTCOMES.values()],
    }


def pytest_sessionfinish(session, exitstatus):
    if OUTCOMES and "path" in _SUMMARY:
        _SUMMARY["path"].write_text(json.dumps(summary(), indent=1, default=str))


def pytest_terminal_summary(terminalreporter):
    if not OUTCOMES:
        return
    s = summary()
    tr = terminalreporter
    tr.section("reliability cases")
    tr.line(
        f"cases: {s['cases']} (skipped {s['skipped']}), passed: {s['passed']}; "
        f"tracebacks: {s['tracebacks']}, "
        f"wrong exit codes: {s['wrong_exit_codes']}, wrong messages: {s['wrong_messages']}, "
        f"half-written outputs: {s['half_written_outputs']}, written outside the output folder: "
        f"{s['written_outside_output']}, inputs changed: {s['inputs_changed']}, code executed from "
        f"untrusted packages: {s['untrusted_code_executed']}, hangs: {s['hangs']}, other failed checks: "
        f"{s['other_failed_checks']}"
    )
    tr.line(f"  CPU time of the emzoo subprocesses: {s['cpu_seconds']:.0f} s")
    for category, row in sorted(s["by_category"].items()):
        tr.line(f"  {category:10s} {row}")
    if s["failed"]:
        tr.line("  failing cases (owner area): " + ", ".join(f"{k} ({v})" for k, v in s["failed"].items()))
    if "path" in _SUMMARY:
        tr.line(f"  details: {_SUMMARY['path']}")
