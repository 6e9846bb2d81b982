"""The notebooks in docs/notebooks are committed clean: valid nbformat 4.5, every cell with a unique
``id``, no outputs (they are run by test_notebooks.py)."""

from __future__ import annotations

import json
import warnings

import pytest

from tests.conftest import REPO

nbformat = pytest.importorskip("nbformat", reason="the checks need nbformat: pip install -e '.[dev]'")

NOTEBOOKS = sorted((REPO / "docs" / "notebooks").glob("*.ipynb"))
FIX = 'python -c "from tests.test_notebooks_clean import normalise; normalise({path!r})"'


def normalise(path: str) -> None:
    """Rewrite the notebook at ``path`` as nbformat 4.5 with an ``id`` for every cell."""
    nb = nbformat.read(path, as_version=4)
    _, nb = nbformat.validator.normalize(nb, version=4, version_minor=5)
    nbformat.write(nbformat.from_dict(nb), path)


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


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_cells_have_unique_ids(notebook):
    raw = json.loads(notebook.read_text(encoding="utf-8"))
    assert (raw["nbformat"], raw["nbformat_minor"]) >= (4, 5), (
        f"{notebook.name}: nbformat {raw['nbformat']}.{raw['nbformat_minor']} has no cell ids; "
        f"write it as 4.5: {FIX.format(path=str(notebook.relative_to(REPO)))}"
    )
    ids = [cell.get("id") for cell in raw["cells"]]
    missing = [i for i, cell_id in enumerate(ids) if not cell_id]
    assert not missing, (
        f"{notebook.name}: cells {missing} have no id; {FIX.format(path=str(notebook.relative_to(REPO)))}"
    )
    repeated = sorted({cell_id for cell_id in ids if ids.count(cell_id) > 1})
    assert not repeated, f"{notebook.name}: cell ids {repeated} are used more than once"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_valid_nbformat(notebook):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MissingIDFieldWarning and friends fail the test
        nb = nbformat.reads(notebook.read_text(encoding="utf-8"), as_version=nbformat.NO_CONVERT)
        nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", (
        f"{notebook.name}: the kernel should be python3 (the test suite runs it with that kernel)"
    )
