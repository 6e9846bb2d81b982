"""``emzoo test`` runs a package's own code (pytorch_state_dict) only when it is trusted: otherwise
both checks of that format are reported as not run, and bioimageio.core's test_model is never called
for it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from emzoo.checks.core import run_core_test
from emzoo.checks.testing import test_package as check_package
from emzoo.cli import main
from emzoo.errors import BackendError
from emzoo.package.trust import TRUST_ENV
from tests.package.statedict import marked_copy

pytest.importorskip("torch", reason="state-dict packages need torch")


@pytest.fixture
def core_calls(monkeypatch):
    """bioimageio.core's test_model, replaced by a recorder that passes."""
    import bioimageio.core

    calls = []

    def fake_test_model(source, weight_format=None, devices=None):
        calls.append(weight_format)
        return SimpleNamespace(status="passed", details=[])

    monkeypatch.setattr(bioimageio.core, "test_model", fake_test_model)
    return calls


@pytest.fixture
def package(trust_base, tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    marker = tmp_path / "package-code-ran"
    folder = marked_copy(trust_base, tmp_path / "pkg", marker, keep=("torchscript", "pytorch_state_dict"))
    return folder, marker


def test_untrusted_state_dict_checks_are_not_run(package, core_calls):
    folder, marker = package
    results = check_package(str(folder))
    state_dict = [r for r in results if r.weights == "pytorch_state_dict"]
    assert len(state_dict) == 2 and all(r.passed is None for r in state_dict)
    assert all("not run" in r.message and "unet.py" in r.message for r in state_dict)
    assert all(r.passed for r in results if r.weights != "pytorch_state_dict")
    assert core_calls == ["torchscript"]
    assert not marker.exists()


def test_trusted_state_dict_checks_run(package, core_calls):
    folder, marker = package
    results = check_package(str(folder), trust_package_code=True)
    assert all(r.passed for r in results), results
    assert core_calls == ["torchscript", "pytorch_state_dict"]
    assert marker.exists()


def test_cli_reports_not_run_with_the_flag(package, core_calls, tmp_path):
    folder, marker = package
    report = tmp_path / "report.xml"
    result = CliRunner().invoke(main, ["test", str(folder), "--junit", str(report)])
    assert result.exit_code == 0, result.output
    assert "2 checks not run" in result.output and "--trust-package-code" in result.output
    assert "FAIL" not in result.output and not marker.exists()
    assert ET.parse(report).getroot().get("skipped") == "2"
    result = CliRunner().invoke(main, ["test", str(folder), "--trust-package-code", "--no-bioimageio"])
    assert result.exit_code == 0, result.output
    assert "not run" not in result.output and marker.exists()


def test_core_test_of_state_dicts_needs_trust(package, core_calls):
    folder, marker = package
    with pytest.raises(BackendError, match="not trusted"):
        run_core_test(folder / "rdf.yaml", "pytorch_state_dict")
    assert core_calls == [] and not marker.exists()
