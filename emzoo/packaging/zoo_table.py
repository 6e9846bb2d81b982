"""The zoo page: one row per package of ``zoo_models/``, with its held-out metrics and baseline.

``python -m emzoo.packaging.zoo_table docs/zoo.md`` writes the page (with no argument, or ``-``, it
prints it). Everything on it comes from the packages' own descriptions: ``config.bioimageio``
(task, modality, the ``evaluations`` with their results summary) and the ``evaluation.json``
attachment emzoo writes beside them (the metrics of the model and of its classical baseline).
``tests/test_docs_site.py`` checks that ``docs/zoo.md`` is what this renders now.

>>> fmt(0.81178), fmt(5736.83), fmt("-")
('0.8118', '5737', '-')
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from emzoo.package.safe_yaml import safe_load

REGENERATE = "python -m emzoo.packaging.zoo_table docs/zoo.md"
ZOO = Path(__file__).resolve().parents[2] / "zoo_models"


def fmt(value: Any) -> str:
    """A metric as the page shows it: 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def cell(text: Any) -> str:
    """``text`` inside a Markdown table cell (its ``|`` escaped)."""
    return str(text).replace("|", "\\|")


def zoo_packages(zoo: Path = ZOO) -> list[Path]:
    """The package folders of ``zoo`` (those with an ``rdf.yaml``), by name."""
    return sorted(p.parent for p in zoo.glob("*/rdf.yaml"))


def _describe(folder: Path) -> dict[str, Any]:
    rdf = safe_load((folder / "rdf.yaml").read_text(encoding="utf-8"), str(folder / "rdf.yaml"))
    config = (rdf.get("config") or {}).get("bioimageio") or {}
    evaluation_file = folder / "evaluation.json"
    evaluation = json.loads(evaluation_file.read_text()) if evaluation_file.is_file() else {}
    training = rdf.get("training_data") or {}
    return {
        "name": rdf.get("name", folder.name),
        "task": config.get("task", "-"),
        "modality": config.get("modality", "-"),
        "trained_on": training.get("name", "-") if isinstance(training, dict) else "-",
        "evaluations": config.get("evaluations") or [],
        "evaluation": evaluation,
        "weights": ", ".join(rdf.get("weights") or {}),
        "license": rdf.get("license", "-"),
        "limitations": (config.get("bias_risks_limitations") or {}).get("limitations", ""),
    }


def _metrics_table(evaluation: dict[str, Any]) -> list[str]:
    metrics = evaluation.get("metrics") or {}
    baseline = evaluation.get("baseline") or {}
    base = baseline.get("metrics") or {}
    if not metrics:
        return []
    rows = [f"| metric | this model | {cell(baseline.get('name', 'classical baseline'))} |", "|---|---|---|"]
    long = evaluation.get("metrics_long") or {}
    for name, value in metrics.items():
        label = f"{name} ({long[name]})" if name in long else name
        rows.append(f"| {cell(label)} | {fmt(value)} | {fmt(base.get(name, '-'))} |")
    return rows


def render_markdown(zoo: Path = ZOO) -> str:
    """The zoo page: an overview table, then each package's held-out metrics next to its baseline."""
    packages = [(folder, _describe(folder)) for folder in zoo_packages(zoo)]
    lines = [
        "# The zoo",
        "",
        f"<!-- Generated from zoo_models/*/rdf.yaml by `{REGENERATE}`: do not edit by hand. -->",
        "",
        "The packages in `zoo_models/` of the repository. Each folder is an unzipped bioimage.io package",
        "(spec 0.5) with its model card (`README.md`: training settings, limitations, how to run and",
        "reproduce it). The metrics are measured through the packaged model, as users run it, on data",
        "never used in training or model selection, next to a classical baseline.",
        "",
        "| package | task | modality | trained on | held-out data | weights |",
        "|---|---|---|---|---|---|",
    ]
    for folder, d in packages:
        held_out = "; ".join(
            f"{e.get('sample_count', '?')} images, {e.get('dataset_role', '?')} split"
            for e in d["evaluations"]
        )
        lines.append(
            f"| `zoo_models/{folder.name}` ({d['name']}) | {d['task']} | {d['modality']} | "
            f"{d['trained_on']} | {held_out or '-'} | {d['weights']} |"
        )
    for folder, d in packages:
        lines += ["", f"## {d['name']}", "", f"`zoo_models/{folder.name}`, license {d['license']}."]
        ev = d["evaluation"]
        if ev:
            lines += [
                "",
                f"Held out: {ev.get('sample_count', '?')} images of the **{ev.get('dataset_role', '?')}** "
                f"split ({ev.get('dataset_name') or d['trained_on']}).",
                "",
                *_metrics_table(ev),
            ]
        if not ev:  # no evaluation.json: the description's own summary
            lines += ["", *(e["results_summary"] for e in d["evaluations"] if e.get("results_summary"))]
        if d["limitations"]:
            lines += ["", f"**Limitations.** {d['limitations']}"]
        here = f"zoo_models/{folder.name}"
        run = f"emzoo predict {here} {here}/sample_input.tif -o predictions/"
        lines += ["", f"Run it from the repository root: `{run}`; its model card:"]
        lines.append(f"`zoo_models/{folder.name}/README.md`.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m emzoo.packaging.zoo_table [PATH]``: write the page to PATH (default: print it)."""
    args = sys.argv[1:] if argv is None else argv
    page = render_markdown()
    if not args or args[0] == "-":
        sys.stdout.write(page)
    else:
        Path(args[0]).write_text(page, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
