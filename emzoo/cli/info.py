"""``emzoo info MODEL|OUTPUT``: what a package is, what it takes and gives, and how well it did; or,
for an output of ``emzoo predict`` (or its ``.provenance.json`` record), how it was made."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
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
    for i, ev in enumerate(evaluations):  # the first is the model's own (others: e.g. the OOD check's)
        role, count = ev.get("dataset_role", "?"), ev.get("sample_count", "?")
        lines.append(f"  evaluation on {ev.get('dataset_id', '?')} ({role} data, {count} images):")
        results = _results(ev)
        if i == 0 and own:  # emzoo's record of the same evaluation: full names, all digits
            results = {name: _value(v) for name, v in own.items()}
        for name, value in results.items():
            base = f" (baseline {_value(base_metrics[name])})" if i == 0 and name in base_metrics else ""
            lines.append(f"      {name}: {value}{base}")
        if base_metrics and i == 0:
            lines.append(f"      baseline: {baseline.get('name', 'a classical method')}")
    return lines


def _short(digest: Any) -> str:
    return f"{digest[:12]}..." if isinstance(digest, str) and digest else "not recorded"


def _sizes(values: Any) -> str:
    return "x".join(str(v) for v in values) if isinstance(values, list) else "auto"


def _calibration(section: Mapping[str, Any]) -> str:
    size = section.get("pixel_size") or {}
    if not size:
        return "no pixel size"
    shown = ", ".join(f"{a} {v:g}" for a, v in size.items())
    return f"pixel size {shown} {section.get('unit') or '(no unit)'}"


def _input_line(section: Mapping[str, Any]) -> str:
    shape = "x".join(str(n) for n in section.get("shape") or [])
    digest = f"sha256 {_short(section.get('sha256'))} of {section.get('sha256_of') or 'nothing'}"
    return (
        f"  input {section.get('id')}: {section.get('path') or 'not a file'} "
        f"[{section.get('axes')} {shape} {section.get('dtype')}], {_calibration(section)}; {digest}"
    )


def _runtime_lines(rt: Mapping[str, Any]) -> list[str]:
    providers = f" ({', '.join(rt['providers'])})" if rt.get("providers") else ""
    tiling = (
        "the whole image in one call"
        if rt.get("tiles") == 1 and rt.get("tile") is None
        else (
            f"tile {_sizes(rt.get('tile'))}, halo {_sizes(rt.get('halo'))}, blend {_sizes(rt.get('blend'))}, "
            f"batch {rt.get('batch') or 'auto'}, {rt.get('tiles') or '?'} tile(s)"
        )
    )
    lines = [
        f"  runtime: {rt.get('backend')} on {rt.get('device')}{providers}, {rt.get('precision')}, "
        f"tta {'on' if rt.get('tta') else 'off'}; {tiling}"
    ]
    stream = rt.get("stream")
    if stream:
        resumed = f", {stream['done_before']} done before a resume" if stream.get("done_before") else ""
        where = f", on dask {stream['dask']}" if stream.get("dask") else ""
        lines.append(
            f"  out of core: {stream.get('chunks')} chunk(s) of {_sizes(stream.get('chunk'))} px "
            f"(context {_sizes(stream.get('context'))}){resumed}{where}"
        )
    modes = [name for name in ("slices", "stack") if rt.get(name)]
    if modes:
        lines.append(f"  read: {', '.join(modes)}")
    if rt.get("rescale") not in (None, "off") or rt.get("rescaled") or rt.get("pixel_size_given"):
        rescaled = rt.get("rescaled") or {}
        to = rescaled.get("to") or {}
        steps = [
            f"{a} {_value_text(v)} -> {_value_text(to.get(a))}" for a, v in rescaled.get("from", {}).items()
        ]
        done = f"; resampled {', '.join(steps)} {rescaled.get('unit')}/px" if rescaled else "; not resampled"
        given = f"; pixel size given: {rt['pixel_size_given']}" if rt.get("pixel_size_given") else ""
        lines.append(f"  rescale: {rt.get('rescale')}{done}{given}")
    return lines


def _value_text(value: Any) -> str:
    if isinstance(value, list):
        numbers = [v for v in _flat(value) if isinstance(v, int | float)]
        if not numbers:
            return "not recorded"
        low, high = min(numbers), max(numbers)
        return f"{low:.4g}" if low == high else f"{low:.4g}..{high:.4g}"
    return "not recorded" if value is None else f"{value:.4g}"


def _flat(values: list) -> list:
    out = []
    for v in values:
        out += _flat(v) if isinstance(v, list) else [v]
    return out


def _processing_lines(processing: Mapping[str, Any]) -> list[str]:
    tensors = processing.get("tensors")
    if tensors is None:
        return ["  normalisation statistics: not recorded"]
    if not tensors:
        return ["  normalisation statistics: none (the processing needs none)"]
    per = processing.get("statistics_of") or "?"
    if processing.get("slices"):
        per += f", {processing['slices']} slices (lowest..highest)"
    lines = [f"  normalisation statistics (of {per}):"]
    for tid, ops in tensors.items():
        for op in ops:
            kw = op.get("kwargs") or {}
            percent = [kw.get(k) for k in ("min_percentile", "max_percentile") if kw.get(k) is not None]
            of = f" ({'-'.join(f'{p:g}' for p in percent)} percentile)" if percent else ""
            values = ", ".join(f"{k} {_value_text(v)}" for k, v in (op.get("values") or {}).items())
            lines.append(f"      {tid}: {op.get('op')}{of}: {values}")
    return lines


def _ood_line(ood: Mapping[str, Any]) -> str:
    score = ood.get("score")
    scored = (
        f" (score {score:.3g}, threshold {ood.get('threshold')})" if isinstance(score, int | float) else ""
    )
    network = ood.get("embedding_score")
    if isinstance(network, int | float):
        scored += f" (network features {network:.3g}, threshold {ood.get('embedding_threshold')})"
    if not ood.get("out_of_distribution"):
        return f"  out of distribution: no{scored}"
    reasons = ood.get("reasons") or []
    return f"  out of distribution: YES{scored}" + "".join(f"\n      - {r}" for r in reasons)


def provenance_lines(record: Mapping[str, Any], folder: Path, shown: str) -> list[str]:
    """A readable summary of a provenance record (:mod:`emzoo.drivers.provenance`) found as
    ``shown``; ``folder`` holds the files it lists."""
    model = record.get("model") or {}
    weights = model.get("weights") or {}
    files = record.get("files") or []
    missing = [f for f in files if not (folder / f).exists()]
    lines = [
        f"{shown}: predicted by {model.get('name')}"
        + (f" (version {model['version']})" if model.get("version") else "")
        + (f", id {model['id']}" if model.get("id") else ""),
        f"  files: {', '.join(files) or 'none'}"
        + (f" (missing now: {', '.join(missing)})" if missing else ""),
        f"  model: {model.get('source')}, sha256 {_short(model.get('sha256'))} of {model.get('sha256_of')}; "
        f"weights {weights.get('format')} ({weights.get('source')}), sha256 {_short(weights.get('sha256'))}",
    ]
    lines += [_input_line(s) for s in [record.get("input") or {}, *(record.get("more_inputs") or [])]]
    lines += _runtime_lines(record.get("runtime") or {})
    lines += _processing_lines(record.get("processing") or {})
    lines.append(_ood_line(record.get("ood") or {}))
    versions = record.get("versions") or {}
    lines.append("  versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    seconds = record.get("seconds")
    took = f" ({seconds:g} s)" if isinstance(seconds, int | float) else ""
    lines.append(f"  predicted: {record.get('started')} -> {record.get('finished')} (UTC){took}")
    return lines


def _output_record(target: str) -> list[str] | None:
    """The summary of ``target``'s provenance record, when it is an output (or a record)."""
    from emzoo.drivers import provenance

    path = Path(target)
    if not path.exists() and not path.name.endswith(provenance.RECORD_SUFFIX):
        return None
    found = provenance.find(path)
    if found is None:
        return None
    record_file, record = found
    folder = record_file.parent if record_file is not None else path.parent
    shown = f"{target} (record {record_file})" if record_file not in (None, path) else target
    return provenance_lines(record, folder, shown)


def _package_lines(model: str) -> list[str]:
    from emzoo.errors import InputError, PackageError
    from emzoo.io.lookup import find_reader
    from emzoo.package.load import open_model

    try:
        pkg = open_model(model)
    except PackageError:
        if find_reader(Path(model)) is not None:  # an image, not a package
            raise InputError(
                f"{model}: an image without a provenance record (emzoo predict writes "
                "<output stem>.provenance.json beside each output) and not a model package"
            ) from None
        raise
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
    return lines


@click.command("info")
@click.argument("target", metavar="MODEL|OUTPUT")
def command(target):
    """Show what the package MODEL (a .zip, a folder or its rdf.yaml) is: name, task, inputs and outputs
    with axes and sizes, weights, metrics, license, citation. Given an OUTPUT of emzoo predict (or
    its .provenance.json record), show how it was made: model and input (with their sha256), runtime
    and tiling, normalisation statistics, out-of-distribution verdict, versions and times."""
    lines = _output_record(target)
    click.echo("\n".join(lines if lines is not None else _package_lines(target)))
