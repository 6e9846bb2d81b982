"""docs/conformance.md lists the features of the conformance matrix: generated, and current."""

from __future__ import annotations

from pathlib import Path

from tests.conformance.matrix import CASES, render_docs

DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"


def test_the_feature_table_is_current():
    current = DOC.read_text(encoding="utf-8")
    assert render_docs(current) == current, "run: python -m tests.conformance.matrix docs/conformance.md"


def test_the_matrix_has_at_least_forty_packages():
    assert len(CASES) >= 40
