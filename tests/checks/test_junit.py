"""JUnit XML for ``emzoo test --junit``."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import pytest

from emzoo.checks.junit import write_junit


@dataclass(frozen=True)
class Result:  # the shape of emzoo.checks.testing.CheckResult
    package: str
    name: str
    weights: str
    passed: bool
    message: str
    seconds: float


def test_tuples_become_one_suite_per_package(tmp_path):
    results = [
        ("a.zip", "emzoo reproduces test outputs [onnx]", True, "max |diff| 1e-7", 0.5),
        ("a.zip", "bioimageio.core test_model [onnx]", False, "test_output mismatch\nmax |diff| 0.3", 2.25),
        ("b/rdf.yaml", "bioimageio.spec validation", True, "", 0.1),
        ("b/rdf.yaml", "bioimageio.core test_model [keras_hdf5]", None, "tensorflow not installed", 0.0),
    ]
    path = write_junit(results, tmp_path / "reports" / "report.xml")
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("4", "1", "1")
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"a.zip", "b/rdf.yaml"}
    a = suites["a.zip"]
    assert (a.get("tests"), a.get("failures"), a.get("time")) == ("2", "1", "2.750")
    failed = a.find("testcase[@name='bioimageio.core test_model [onnx]']")
    failure = failed.find("failure")
    assert failure.get("message") == "test_output mismatch"
    assert failure.text == "test_output mismatch\nmax |diff| 0.3"
    assert failed.get("classname") == "a.zip" and failed.get("time") == "2.250"
    assert suites["b/rdf.yaml"].find("testcase/skipped").get("message") == "tensorflow not installed"
    assert not list(tmp_path.glob("reports/.*"))  # no temporary file left


def test_result_objects_and_special_characters(tmp_path):
    results = [Result("m<1>.zip", "reproduce", "torchscript", False, 'diff "big" & <bad>', 1.0)]
    root = ET.parse(write_junit(results, tmp_path / "r.xml")).getroot()
    case = root.find("testsuite/testcase")
    assert case.get("name") == "reproduce [torchscript]"
    assert case.get("classname") == "m<1>.zip"
    assert case.find("failure").text == 'diff "big" & <bad>'


def test_empty_results_and_bad_tuples(tmp_path):
    root = ET.parse(write_junit([], tmp_path / "r.xml")).getroot()
    assert root.get("tests") == "0" and root.findall("testsuite") == []
    with pytest.raises(ValueError, match="needs \\(package, check, passed, message, seconds\\)"):
        write_junit([("a.zip", "check", True)], tmp_path / "r.xml")
