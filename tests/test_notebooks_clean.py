"""The notebooks in docs/notebooks are committed without outputs (they are run by test_notebooks.py)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "docs" / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_no_outputs(notebook):
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    dirty = [
        i
        for i, cell in enumerate(cells)
        if cell["cell_type"] == "code"
        and (cell.get("outputs") != [] or cell.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{notebook.name}: code cells {dirty} have outputs or an execution count; clear them before "
        "committing (Jupyter: Edit > Clear Outputs of All Cells, or "
        f"jupyter nbconvert --clear-output --inplace {notebook.relative_to(REPO)})"
    )
