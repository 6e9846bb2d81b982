"""``emzoo info MODEL``: what a package is, what it takes and gives, and how well it did."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click

from emzoo.metrics import full_name


def _processing(ops) -> str:
    return ", ".join(op.id for op in ops) or "none"


def _value(value: Any) -> str:
    """A metric value with 4 significant digits (whole numbers and text as they are)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def _results(ev: Mapping[str, Any]) -> dict[str, str]:
    """``{full metric name: value}`` of one bioimage.io evaluation; one value per evaluation factor."""
    factors = ev.get("evaluation_factors") or []
    longs = ev.get("metrics_long") or []
    out = {}
    for i, (short, row) in enumerate(zip(ev.get("metrics", []), ev.get("results", []), strict=False)):
        values = row if isinstance(row, list) else [row]
        shown = [_value(v) for v in values]
        if len(shown) > 1:
            shown = [f"{v} ({f})" for v, f in zip(shown, factors, strict=False)]
        out[full_name(short, longs[i] if i < len(longs) else None)] = ", ".join(shown)
    return out


def evaluation_lines(evaluations: Sequence[Mapping[str, Any]], emzoo: Mapping[str, Any] | None) -> list[str]:
    """One block per evaluation: the data set and its images, then ``name: value`` per metric (with the
    classical baseline's value when the package records one in ``config.emzoo.evaluation``)."""
    emzoo = emzoo if isinstance(emzoo, Mapping) else {}
    own = emzoo.get("metrics") if isinstance(emzoo.get("metrics"), Mapping) else {}
    baseline = emzoo.get("baseline") if isinstance(emzoo.get("baseline"), Mapping) else {}
    base_metrics = baseline.get("metrics") if isinstance(baseline.get("metrics"), Mapping) else {}
    lines = []
    for ev in evaluations:
        role, count = ev.get("dataset_role", "?"), ev.get("sample_count", "?")
        lines.append(f"  evaluation on {ev.get('dataset_id', '?')} ({role} data, {count} images):")
        results = _results(ev)
        if len(evaluations) == 1 and own:  # emzoo's record of the same evaluation: full names, all digits
            results = {name: _value(v) for name, v in own.items()}
        for name, value in results.items():
            base = f" (baseline {_value(base_metrics[name])})" if name in base_metrics else ""
            lines.append(f"      {name}: {value}{base}")
        if base_metrics and len(evaluations) == 1:
            lines.append(f"      baseline: {baseline.get('name', 'a classical method')}")
    return lines


@click.command("info")
@click.argument("model")
def command(model):
    """Show what the package MODEL (a .zip, a folder or its rdf.yaml) is: name, task, inputs and outputs
    with axes and sizes, weights, metrics, license, citation."""
    from emzoo.package.load import open_model

    pkg = open_model(model)
    s = pkg.spec
    lines = [f"{s.name}" + (f" (version {s.version})" if s.version else ""), f"  {s.description}"]
    lines.append(f"  format: bioimage.io model {s.format_version}; package at {pkg.root}")
    if s.emzoo.get("task"):
        lines.append(f"  task: {s.emzoo['task']}")
    if s.tags:
        lines.append(f"  tags: {', '.join(s.tags)}")
    for kind, tensors in (("input", s.inputs), ("output", s.outputs)):
        for t in tensors:
            lines.append(f"  {kind} {t.id}: [{t.describe_axes()}] {t.dtype}")
            proc = "preprocessing" if kind == "input" else "postprocessing"
            lines.append(f"      {proc}: {_processing(t.processing)}")
            halos = {a.id: a.halo for a in t.axes if a.halo}
            if halos:
                lines.append(f"      halo: {halos}")
            units = {a.id: f"{a.scale:g} {a.unit}" for a in t.axes if a.is_spatial and a.unit}
            if units:
                lines.append(f"      pixel size: {units}")
    for fmt in s.weight_formats():
        w = s.weights[fmt]
        lines.append(f"  weights {fmt}: {w.source}" + (f" (sha256 {w.sha256[:12]}...)" if w.sha256 else ""))
    lines.extend(evaluation_lines(s.evaluations, s.emzoo.get("evaluation")))
    lines.append(f"  license: {s.license or 'not stated'}")
    if s.authors:
        lines.append(f"  authors: {'; '.join(s.authors)}")
    if s.training_data:
        lines.append(f"  training data: {s.training_data}")
    for c in s.cite:
        ref = c.get("doi") or c.get("url") or ""
        lines.append(f"  cite: {c['text']}" + (f" ({ref})" if ref else ""))
    click.echo("\n".join(lines))
