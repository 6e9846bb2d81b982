"""Translate a validated bioimage.io ``ModelDescr`` (spec 0.5 or 0.4) into emzoo's :class:`ModelSpec`.

This is the only runtime module that touches bioimageio.spec objects, so no other layer knows about
spec versions. A 0.4 description is read as 0.4, as bioimageio.core runs it (its conversion to 0.5
fails for some valid packages, e.g. a fixed-size output with a halo, and loses the
``reference_tensor`` of ``scale_range``): its axes and ops go through bioimageio.spec's per-part
converters, with what bioimageio.core adds to 0.4 tensors (a cast to the declared data type before
the ops, to float32 after them) and its tolerance (1e-3, no mismatched element).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bioimageio.spec.model import v0_4, v0_5

from emzoo.package.spec import (
    Architecture,
    Axis,
    ModelSpec,
    Op,
    SizeRef,
    TensorSpec,
    Tolerance,
    Weights,
)


def _source(src: Any) -> str:
    """A package-relative path, as text."""
    path = getattr(src, "path", None)
    return str(path) if path is not None else str(src)


def _file(descr: Any) -> str | None:
    return None if descr is None else _source(descr.source)


def _axis(a: Any) -> Axis:
    kind = a.type
    common: dict[str, Any] = {"id": str(a.id), "type": kind}
    if kind == "batch":
        return Axis(**common, size=a.size)
    if kind == "channel":
        names = tuple(str(n) for n in a.channel_names)
        return Axis(**common, size=len(names), channel_names=names)
    size = a.size
    if isinstance(size, int):
        common["size"] = size
    elif isinstance(size, v0_5.ParameterizedSize):
        common.update(min=size.min, step=size.step)
    elif isinstance(size, v0_5.SizeReference):
        common["ref"] = SizeRef(str(size.tensor_id), str(size.axis_id), int(size.offset))
    elif isinstance(size, v0_5.DataDependentSize):
        common["data_dependent"] = True
    if kind in ("space", "time"):
        common.update(scale=float(a.scale), unit=None if a.unit is None else str(a.unit))
        common["concatenable"] = bool(getattr(a, "concatenable", False))
    common["halo"] = int(getattr(a, "halo", 0) or 0)
    return Axis(**common)


def _ops(ops: Any) -> tuple[Op, ...]:
    out = []
    for op in ops:
        kwargs = op.kwargs.model_dump(mode="json") if getattr(op, "kwargs", None) is not None else {}
        out.append(Op(str(op.id), kwargs))
    return tuple(out)


def _tensor(t: Any, processing: Any) -> TensorSpec:
    return TensorSpec(
        id=str(t.id),
        axes=tuple(_axis(a) for a in t.axes),
        dtype=_dtype(t.data),
        processing=_ops(processing),
        test_tensor=_file(t.test_tensor),
        sample_tensor=_file(t.sample_tensor),
        description=t.description or "",
        optional=bool(getattr(t, "optional", False)),
    )


def _dtype(data: Any) -> str:
    first = data[0] if isinstance(data, (list, tuple)) else data
    return str(first.type)


def _weights(fmt: str, w: Any) -> Weights:
    arch = None
    a = getattr(w, "architecture", None)
    if a is not None:
        arch = Architecture(
            callable=str(a.callable),
            source=_source(a.source) if getattr(a, "source", None) is not None else None,
            sha256=str(a.sha256) if getattr(a, "sha256", None) else None,
            import_from=getattr(a, "import_from", None),
            kwargs=dict(a.kwargs),
        )
    ext = getattr(w, "external_data", None)
    return Weights(
        format=fmt,
        source=_source(w.source),
        sha256=str(w.sha256) if w.sha256 else None,
        architecture=arch,
        external_data=_file(ext),
        external_data_sha256=str(ext.sha256) if ext is not None and ext.sha256 else None,
        opset_version=getattr(w, "opset_version", None),
        parent=str(w.parent) if getattr(w, "parent", None) else None,
        strict=bool(getattr(w, "strict", True)),
    )


def _author(a: Any) -> str:
    name = str(a.name)
    return f"{name} ({a.affiliation})" if getattr(a, "affiliation", None) else name


def _cite(c: Any) -> dict[str, str]:
    out = {"text": str(c.text)}
    if getattr(c, "doi", None):
        out["doi"] = str(c.doi)
    if getattr(c, "url", None):
        out["url"] = str(c.url)
    return out


def spec_from_description(descr: Any, original_format_version: str) -> ModelSpec:
    """The :class:`ModelSpec` of a spec-0.5 (or 0.4) model description."""
    if isinstance(descr, v0_4.ModelDescr):
        return _spec_from_v04(descr, original_format_version)
    weights = {
        fmt: _weights(fmt, w)
        for fmt in v0_5.WeightsDescr.model_fields
        if (w := getattr(descr.weights, fmt, None)) is not None
    }
    bio = descr.config.bioimageio
    tolerances = tuple(
        Tolerance(
            rtol=t.relative_tolerance,
            atol=t.absolute_tolerance,
            mismatched_per_million=t.mismatched_elements_per_million,
            output_ids=tuple(str(i) for i in t.output_ids),
            weights_formats=tuple(str(f) for f in t.weights_formats),
        )
        for t in bio.reproducibility_tolerance
    )
    extra = descr.config.model_extra or {}
    training = descr.training_data
    training_id = None
    if training is not None:
        training_id = str(getattr(training, "id", None) or getattr(training, "name", "") or "") or None
    return ModelSpec(
        name=descr.name,
        description=descr.description,
        format_version=original_format_version,
        inputs=tuple(_tensor(t, t.preprocessing) for t in descr.inputs),
        outputs=tuple(_tensor(t, t.postprocessing) for t in descr.outputs),
        weights=weights,
        tolerances=tolerances,
        license=None if descr.license is None else str(descr.license),
        authors=tuple(_author(a) for a in descr.authors),
        cite=tuple(_cite(c) for c in descr.cite),
        tags=tuple(str(t) for t in descr.tags),
        documentation=_file_or_none(descr.documentation),
        covers=tuple(_source(c) for c in descr.covers),
        training_data=training_id,
        id=None if descr.id is None else str(descr.id),
        version=None if descr.version is None else str(descr.version),
        evaluations=tuple(e.model_dump(mode="json", exclude_none=True) for e in bio.evaluations),
        emzoo=dict(extra.get("emzoo", {}) or {}),
    )


def _file_or_none(doc: Any) -> str | None:
    if doc is None:
        return None
    return _source(getattr(doc, "source", doc))


# ------------------------------------------------------------------------------------- spec 0.4

V04_TOLERANCE = Tolerance(rtol=1e-3, atol=1e-3, mismatched_per_million=0)  # bioimageio.core's for 0.4


def _v04_ops(t: Any, ops: Any, first: bool) -> tuple[Op, ...]:
    """A 0.4 tensor's ops as bioimageio.core runs them: cast to ``data_type``, the ops (converted to
    0.5; ``scale_range`` keeps its ``reference_tensor``), cast to float32. The first tensor of a list
    without ops gets no first cast (bioimageio.core 0.11 drops it there)."""
    from bioimageio.spec.model.v0_5 import _convert_proc

    out = [] if first and not ops else [Op("ensure_dtype", {"dtype": str(t.data_type)})]
    for p in ops:
        op = _ops([_convert_proc(p, t.axes)])[0]
        ref = getattr(p.kwargs, "reference_tensor", None)
        if ref is not None and "reference_tensor" in op.kwargs:
            op = Op(op.id, {**op.kwargs, "reference_tensor": str(ref)})
        out.append(op)
    return (*out, Op("ensure_dtype", {"dtype": "float32"}))


def _v04_sizes(shape: Any, axes: str) -> dict[str, int]:
    sizes = shape.min if isinstance(shape, v0_4.ParameterizedInputShape) else shape
    return dict(zip(axes, sizes, strict=False)) if isinstance(sizes, list | tuple) else {}


def _v04_tensor(t: Any, kind: str, refs: Any, test: Any, first: bool) -> TensorSpec:
    converted = v0_5.convert_axes(t.axes, shape=t.shape, tensor_type=kind, halo=None, size_refs=refs)
    axes = [_axis(a) for a in converted]
    halo = getattr(t, "halo", None)
    if halo:  # kept also where 0.5 refuses it (a fixed-size output)
        axes = [replace(a, halo=int(h)) if a.is_spatial else a for a, h in zip(axes, halo, strict=True)]
    ops = t.preprocessing if kind == "input" else t.postprocessing
    return TensorSpec(
        id=str(t.name),
        axes=tuple(axes),
        dtype=str(t.data_type) if kind == "input" else "float32",
        processing=_v04_ops(t, ops, first),
        test_tensor=_source(test),
        description=t.description or "",
    )


def _v04_weights(fmt: str, w: Any) -> Weights:
    arch = None
    a = getattr(w, "architecture", None)
    if a is not None:
        from_file = isinstance(a, v0_4.CallableFromFile)
        arch = Architecture(
            callable=str(a.callable_name),
            source=_source(a.source_file) if from_file else None,
            sha256=str(w.architecture_sha256) if from_file and w.architecture_sha256 else None,
            import_from=None if from_file else str(a.module_name),
            kwargs=dict(w.kwargs),
        )
    return Weights(
        format=fmt,
        source=_source(w.source),
        sha256=str(w.sha256) if w.sha256 else None,
        architecture=arch,
        opset_version=getattr(w, "opset_version", None),
        parent=str(w.parent) if getattr(w, "parent", None) else None,
    )


def _spec_from_v04(descr: v0_4.ModelDescr, original_format_version: str) -> ModelSpec:
    input_refs = {t.name: _v04_sizes(t.shape, t.axes) for t in descr.inputs}
    output_refs = {**{t.name: _v04_sizes(t.shape, t.axes) for t in descr.outputs}, **input_refs}
    inputs = tuple(
        _v04_tensor(t, "input", input_refs, test, i == 0)
        for i, (t, test) in enumerate(zip(descr.inputs, descr.test_inputs, strict=True))
    )
    outputs = tuple(
        _v04_tensor(t, "output", output_refs, test, i == 0)
        for i, (t, test) in enumerate(zip(descr.outputs, descr.test_outputs, strict=True))
    )
    weights = {
        fmt: _v04_weights(fmt, w)
        for fmt in v0_4.WeightsDescr.model_fields
        if (w := getattr(descr.weights, fmt, None)) is not None
    }
    config = descr.config if isinstance(descr.config, dict) else {}
    training = descr.training_data
    return ModelSpec(
        name=descr.name,
        description=descr.description,
        format_version=original_format_version,
        inputs=inputs,
        outputs=outputs,
        weights=weights,
        tolerances=(V04_TOLERANCE,),
        license=None if descr.license is None else str(descr.license),
        authors=tuple(_author(a) for a in descr.authors),
        cite=tuple(_cite(c) for c in descr.cite),
        tags=tuple(str(t) for t in descr.tags),
        documentation=None if descr.documentation is None else _source(descr.documentation),
        covers=tuple(_source(c) for c in descr.covers),
        training_data=None if training is None else str(getattr(training, "id", None) or training.name),
        id=None if descr.id is None else str(descr.id),
        version=None if descr.version is None else str(descr.version),
        emzoo=dict(config.get("emzoo", {}) or {}),
    )
