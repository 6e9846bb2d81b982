"""``emzoo info MODEL``: what a package is, what it takes and gives, and how well it did."""

from __future__ import annotations

import click


def _processing(ops) -> str:
    return ", ".join(op.id for op in ops) or "none"


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
    for ev in s.evaluations:
        role = ev.get("dataset_role", "?")
        lines.append(
            f"  evaluation on {ev.get('dataset_id', '?')} ({role}, {ev.get('sample_count', '?')} samples):"
        )
        for metric, value in zip(ev.get("metrics", []), ev.get("results", []), strict=False):
            lines.append(f"      {metric}: {value}")
    lines.append(f"  license: {s.license or 'not stated'}")
    if s.authors:
        lines.append(f"  authors: {'; '.join(s.authors)}")
    if s.training_data:
        lines.append(f"  training data: {s.training_data}")
    for c in s.cite:
        ref = c.get("doi") or c.get("url") or ""
        lines.append(f"  cite: {c['text']}" + (f" ({ref})" if ref else ""))
    click.echo("\n".join(lines))
