"""JUnit XML for ``emzoo test --junit report.xml``: CI systems (GitHub Actions, GitLab) show each
check of each package as one test case."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emzoo.atomic import atomic_path

MAX_MESSAGE = 2000


def _fields(result: Any) -> tuple[str, str, bool | None, str, float]:
    """``(package, check, passed, message, seconds)`` from a tuple or a result object (such as
    ``emzoo.checks.testing.CheckResult``, whose ``weights`` joins the check name)."""
    if isinstance(result, tuple | list):
        if len(result) != 5:
            raise ValueError(
                f"a result tuple needs (package, check, passed, message, seconds), got {result!r}"
            )
        package, name, passed, message, seconds = result
    else:
        package, name = result.package, result.name
        passed, message, seconds = result.passed, result.message, result.seconds
        weights = getattr(result, "weights", "")
        if weights and weights != "-":
            name = f"{name} [{weights}]"
    return str(package), str(name), passed, str(message or ""), float(seconds or 0.0)


def junit_xml(results: Iterable[Any], *, suite_name: str = "emzoo test") -> ET.ElementTree:
    """One ``<testsuite>`` per package, one ``<testcase>`` per check; ``passed=None`` is a skip."""
    by_package: dict[str, list[tuple[str, bool | None, str, float]]] = defaultdict(list)
    for r in results:
        package, name, passed, message, seconds = _fields(r)
        by_package[package].append((name, passed, message, seconds))
    root = ET.Element("testsuites", name=suite_name)
    totals = {"tests": 0, "failures": 0, "skipped": 0, "time": 0.0}
    for package, cases in by_package.items():
        failures = sum(1 for _, p, _, _ in cases if p is False)
        skipped = sum(1 for _, p, _, _ in cases if p is None)
        seconds = sum(c[3] for c in cases)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=package,
            tests=str(len(cases)),
            failures=str(failures),
            errors="0",
            skipped=str(skipped),
            time=f"{seconds:.3f}",
        )
        for name, passed, message, secs in cases:
            case = ET.SubElement(suite, "testcase", classname=package, name=name, time=f"{secs:.3f}")
            text = message[:MAX_MESSAGE]
            if passed is False:
                failure = ET.SubElement(case, "failure", message=text.splitlines()[0] if text else "failed")
                failure.text = text
            elif passed is None:
                ET.SubElement(case, "skipped", message=text)
            elif text:
                ET.SubElement(case, "system-out").text = text
        totals["tests"] += len(cases)
        totals["failures"] += failures
        totals["skipped"] += skipped
        totals["time"] += seconds
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", "0")
    root.set("skipped", str(totals["skipped"]))
    root.set("time", f"{totals['time']:.3f}")
    return ET.ElementTree(root)


def write_junit(results: Iterable[Any], path: str | Path, *, suite_name: str = "emzoo test") -> Path:
    """Write ``results`` — ``(package, check name, passed, message, seconds)`` tuples or result
    objects with those attributes — as JUnit XML to ``path`` (atomically); returns the path.

    Examples
    --------
    >>> rows = [("model.zip", "bioimageio.core test_model [onnx]", True, "", 2.1)]
    >>> write_junit(rows, "report.xml")  # doctest: +SKIP
    """
    path = Path(path)
    tree = junit_xml(results, suite_name=suite_name)
    ET.indent(tree)
    with atomic_path(path) as tmp:
        tree.write(tmp, encoding="utf-8", xml_declaration=True)
    return path
