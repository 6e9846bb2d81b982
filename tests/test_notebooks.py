"""The notebooks in docs/notebooks run from top to bottom (quick mode: tiny training, few images)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "docs" / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(notebook, tmp_path):
    if not (REPO / "zoo_models" / "em-membrane-unet2d" / "rdf.yaml").is_file():
        pytest.skip("needs the zoo model zoo_models/em-membrane-unet2d")
    cells = json.loads(notebook.read_text())["cells"]
    code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    script = tmp_path / f"{notebook.stem}.py"
    script.write_text(code)
    env = {
        **os.environ,
        "EMZOO_NOTEBOOK_QUICK": "1",
        "EMZOO_NOTEBOOK_WORK": str(tmp_path / "work"),
        "MPLBACKEND": "Agg",
    }
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=notebook.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
