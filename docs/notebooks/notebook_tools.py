"""Small helpers shared by the notebooks in this folder: where things are, the quick setting, tables.

The notebooks import it from their own folder (Jupyter starts them there). It needs nothing beyond
the standard library and IPython, which every Jupyter kernel has.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

QUICK_VAR = "EMZOO_NOTEBOOK_QUICK"  # "1": tiny training, few images (what the test suite runs)
WORK_VAR = "EMZOO_NOTEBOOK_WORK"  # where the notebooks write (default: notebook_outputs/ in the checkout)
DATA_VAR = "EMZOO_NOTEBOOK_DATA"  # a training-data folder for 02_train_and_package (optional)


def repo_root(start: Path | None = None) -> Path:
    """The emzoo checkout that holds this folder (``examples/`` and ``zoo_models/`` are read from it)."""
    here = Path.cwd() if start is None else Path(start)
    for folder in [here, *here.parents]:
        if (folder / "pyproject.toml").is_file() and (folder / "zoo_models").is_dir():
            return folder
    raise FileNotFoundError(f"{here} is not inside an emzoo checkout: open the notebooks in docs/notebooks")


def quick() -> bool:
    """True when the test suite runs the notebooks in their quick setting."""
    return os.environ.get(QUICK_VAR) == "1"


def work_dir(repo: Path) -> Path:
    """The folder the notebooks write to (created): ``EMZOO_NOTEBOOK_WORK`` or ``notebook_outputs/``."""
    work = Path(os.environ.get(WORK_VAR) or repo / "notebook_outputs")
    work.mkdir(parents=True, exist_ok=True)
    return work


def data_dir() -> Path | None:
    """The training-data folder named by ``EMZOO_NOTEBOOK_DATA``, or None."""
    value = os.environ.get(DATA_VAR)
    return Path(value).expanduser() if value else None


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    return " ".join(str(value).split()).replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """``rows`` (dicts) as a Markdown table; ``columns`` chooses and orders the columns."""
    if not rows:
        return "*(nothing to show)*"
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None):
    """``rows`` shown as a table in the notebook (a Markdown display object)."""
    from IPython.display import Markdown

    return Markdown(markdown_table(rows, columns))


def card_sections(card: Path, titles: Iterable[str]):
    """The sections of a model card (``## Title`` ... up to the next ``##``) whose titles start with
    one of ``titles``, shown as Markdown."""
    from IPython.display import Markdown

    text = Path(card).read_text(encoding="utf-8")
    parts = re.split(r"(?m)^(?=## )", text)
    wanted = tuple(titles)
    chosen = [p.strip() for p in parts if p.startswith("## ") and p[3:].startswith(wanted)]
    return Markdown("\n\n".join(chosen) or f"*{card.name} has no section {', '.join(wanted)}*")
