"""Every number in a zoo card's metrics tables is the number its ``rdf.yaml`` records.

A card is Markdown that people read; ``config.bioimageio.evaluations`` is what tools read. Both are
written by ``emzoo package`` (and ``emzoo calibrate``), but a card can be edited by hand afterwards,
so this checks, for each model under ``zoo_models/``:

- the "Validation" table: each metric's value equals its entry in ``evaluations[0].results``, and the
  baseline's equals the one ``results_summary`` gives (rounded to the digits the card shows);
- the "All methods, per condition" table: it is the package's ``evaluation.json`` table, whose metrics
  are those of ``evaluations[0]``, and each of its numbers is one of that record's numbers;
- the "Out-of-distribution check" table: AUROC, share flagged and image count per type equal the
  out-of-distribution entry of ``evaluations``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

PACKAGES = sorted(p.parent for p in REPO.glob("zoo_models/*/rdf.yaml"))
IDS = [p.name for p in PACKAGES]
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")


def agrees(shown: str, value: float) -> bool:
    """``shown`` (a number as the card prints it, maybe with ``%``) is ``value`` rounded to its digits."""
    percent = shown.endswith("%")
    text = shown.rstrip("%")
    digits = len(text.partition(".")[2])
    number = 100 * value if percent else value
    return abs(round(number, digits) - float(text)) <= 10 ** (-digits) / 2 + 1e-9


def section(card: str, title: str) -> str:
    """The text of the card's section ``## title`` (empty when there is none)."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", card, flags=re.M | re.S)
    return match.group(1) if match else ""


def tables(text: str) -> list[list[list[str]]]:
    """The Markdown tables of ``text``: rows of cells, the header first, the ``|---|`` line left out."""
    found, rows = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        elif rows:
            found.append(rows)
            rows = []
    return found


def full_names(evaluation: dict[str, Any]) -> list[str]:
    """Each metric's emzoo name: bioimage.io's ``metrics`` are cut to 16 characters, and then
    ``metrics_long`` starts with the full name (``count_rel_error_median: ...``)."""
    names = []
    for short, long in zip(evaluation["metrics"], evaluation["metrics_long"], strict=True):
        head = long.partition(": ")[0]
        names.append(head if head != short and head.startswith(short) else short)
    return names


def summary_baseline(summary: str) -> dict[str, str]:
    """``{metric: baseline value}`` from ``results_summary``'s ``metric MODEL vs BASELINE`` pairs."""
    return dict(re.findall(r"(\w+) \S+ vs (-?[\d.e+-]+?|nan)(?=[,.]? |\.?$)", summary))


def numbers_in(value: Any) -> Iterator[float]:
    """Every number in a JSON value (nested dicts and lists)."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield float(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from numbers_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from numbers_in(item)


def load(package: Path) -> tuple[str, list[dict[str, Any]]]:
    rdf = yaml.safe_load((package / "rdf.yaml").read_text(encoding="utf-8"))
    card = (package / "README.md").read_text(encoding="utf-8")
    return card, rdf["config"]["bioimageio"].get("evaluations") or []


@pytest.mark.parametrize("package", PACKAGES, ids=IDS)
def test_validation_table_is_the_recorded_evaluation(package: Path):
    card, evaluations = load(package)
    assert evaluations, f"{package.name}: no config.bioimageio.evaluations"
    held_out = evaluations[0]
    recorded = dict(zip(full_names(held_out), (r[0] for r in held_out["results"]), strict=True))
    baseline = summary_baseline(held_out.get("results_summary") or "")
    table = tables(section(card, "Validation"))[0]
    assert table[0][:2] == ["metric", "this model"], table[0]
    wrong = []
    for metric, model, base in table[1:]:
        if model != "-" and not (metric in recorded and agrees(model, recorded[metric])):
            wrong.append(f"{metric}: card {model}, rdf {recorded.get(metric)}")
        if base != "-" and not (metric in baseline and agrees(base, float(baseline[metric]))):
            wrong.append(f"{metric} (baseline): card {base}, rdf {baseline.get(metric)}")
    assert sorted(m for m, *_ in table[1:]) == sorted(recorded), "the card lists other metrics"
    assert wrong == []


@pytest.mark.parametrize("package", PACKAGES, ids=IDS)
def test_per_condition_table_is_the_packaged_record(package: Path):
    card, evaluations = load(package)
    text = section(card, "Validation")
    if "All methods, per condition" not in text:
        pytest.skip(f"{package.name}: no per-condition table")
    record = json.loads((package / "evaluation.json").read_text(encoding="utf-8"))
    assert record["table"] in text
    held_out = evaluations[0]
    recorded = dict(zip(full_names(held_out), (r[0] for r in held_out["results"]), strict=True))
    assert {k: float(v) for k, v in record["metrics"].items()} == recorded
    known = list(numbers_in(record))
    table = tables(text.partition("All methods, per condition")[2])[0]
    unknown = [
        f"{row[0]}: {n}"
        for row in table[1:]
        for cell in row[1:]
        for n in NUMBER.findall(cell)
        if not any(agrees(n, v) for v in known)
    ]
    assert unknown == []


@pytest.mark.parametrize("package", PACKAGES, ids=IDS)
def test_ood_table_is_the_recorded_separation(package: Path):
    card, evaluations = load(package)
    ood = [e for e in evaluations if e["dataset_id"] == "out-of-distribution-em-image-types"]
    found = tables(section(card, "Out-of-distribution check"))
    if not ood or not found:
        assert not ood and not found, f"{package.name}: the card and rdf.yaml disagree on the check"
        pytest.skip(f"{package.name}: no out-of-distribution separation recorded")
    entry, table = ood[0], found[0]
    assert table[0] == ["image type", "images", "AUROC", "flagged"], table[0]
    results = dict(zip(entry["metrics"], entry["results"], strict=True))
    longs = entry["evaluation_factors_long"]  # "55 images of type ssTEM", "all 142 images of ..."
    counts = [int(long.split()[1 if long.startswith("all") else 0]) for long in longs]
    rows = {row[0]: row[1:] for row in table[1:]}
    assert list(rows) == entry["evaluation_factors"]
    for k, factor in enumerate(entry["evaluation_factors"]):
        images, auroc, flagged = rows[factor]
        assert int(images) == counts[k], factor
        assert agrees(auroc, results["auroc"][k]), (factor, auroc, results["auroc"][k])
        assert agrees(flagged, results["flagged"][k]), (factor, flagged, results["flagged"][k])


def test_the_checks_catch_a_changed_number():
    assert agrees("0.7478", 0.747798944) and agrees("23.85", 23.8541) and agrees("0%", 0.001)
    assert not agrees("0.7479", 0.747798944) and not agrees("5%", 0.01)
    card = (
        "## Validation\n\ntext\n\n| metric | this model | b |\n|---|---|---|\n| f1 | 0.75 | - |\n\n## Next\n"
    )
    assert tables(section(card, "Validation")) == [[["metric", "this model", "b"], ["f1", "0.75", "-"]]]
    summary = "This model vs the classical baseline 'LoG': f1 0.7478 vs 0.3563, box_ap50 0.6532 vs 0.133."
    assert summary_baseline(summary) == {"f1": "0.3563", "box_ap50": "0.133"}
    evaluation = {
        "metrics": ["f1", "count_rel_error_"],
        "metrics_long": ["centre F1: x", "count_rel_error_median: y"],
    }
    assert full_names(evaluation) == ["f1", "count_rel_error_median"]
