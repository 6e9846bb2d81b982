"""The notebooks in docs/notebooks run from top to bottom *as notebooks*: nbclient executes each one in a
Jupyter kernel (the ipykernel of this interpreter), in docs/notebooks, in the quick setting (tiny
training, few images). The executed copy stays in memory: nothing is written back to the repository."""

from __future__ import annotations

import os
import re
import time

import pytest

from tests.conftest import REPO

_NEEDS = "the notebook tests need nbformat, nbclient and ipykernel: pip install -e '.[dev]'"
nbformat = pytest.importorskip("nbformat", reason=_NEEDS)
nbclient = pytest.importorskip("nbclient", reason=_NEEDS)
pytest.importorskip("ipykernel", reason=_NEEDS)

NOTEBOOKS = sorted((REPO / "docs" / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # one cell in the quick setting takes seconds; this only stops a hang
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _kernel_manager():
    """A manager for the ``python3`` kernel of *this* interpreter (ipykernel's own spec), whatever
    other kernels named python3 the user's Jupyter folders hold."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    return KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))


def _failure(notebook, nb, error: Exception) -> str:
    """The failing cell's number, id and source, and the tail of its traceback."""
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                trace = _ANSI.sub("", "\n".join(output.get("traceback", [])))
                return (
                    f"{notebook.name}: cell {index} (id {cell.get('id')}) failed:\n"
                    f"{cell.source}\n----- traceback (tail) -----\n{trace[-3000:]}"
                )
    return f"{notebook.name}: {type(error).__name__}: {_ANSI.sub('', str(error))[-3000:]}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(notebook, tmp_path):
    if not (REPO / "zoo_models" / "em-membrane-unet2d" / "rdf.yaml").is_file():
        pytest.skip("needs the zoo model zoo_models/em-membrane-unet2d")
    on_disk = notebook.read_bytes()
    nb = nbformat.reads(on_disk.decode("utf-8"), as_version=4)
    env = {
        **os.environ,
        "EMZOO_NOTEBOOK_QUICK": "1",
        "EMZOO_NOTEBOOK_WORK": str(tmp_path / "work"),
    }
    env.pop("EMZOO_NOTEBOOK_DATA", None)  # the quick setting never reads a user's training data
    client = nbclient.NotebookClient(
        nb,
        km=_kernel_manager(),
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(notebook.parent)}},  # the kernel's working directory
    )
    start = time.perf_counter()
    try:
        client.execute(env=env)
    except (nbclient.exceptions.CellExecutionError, nbclient.exceptions.CellTimeoutError) as e:
        pytest.fail(_failure(notebook, nb, e), pytrace=False)
    print(f"{notebook.name}: executed in {time.perf_counter() - start:.1f} s")
    assert notebook.read_bytes() == on_disk, f"{notebook.name} was changed on disk by its run"
    ran = [c for c in nb.cells if c.cell_type == "code"]
    assert ran and all(c.execution_count for c in ran), f"{notebook.name}: not every code cell ran"
