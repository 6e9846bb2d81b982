"""bioimageio.spec 0.5 objects for each part of a package (no YAML is written by hand).

Files are given as absolute paths in a staging folder; ``save_bioimageio_package`` (or
``..._as_folder``) copies them into the package and writes relative names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emzoo.metrics import short_names
from emzoo.package.spec import Tolerance
from emzoo.packaging.export import ExportedWeights, PackagingError
from emzoo.packaging.geometry import Geometry
from emzoo.packaging.info import PackagingInfo, TensorInfo, with_float32_end
from emzoo.packaging.metadata import cite_entries, data_url, is_url, slug


def processing_descrs(ops: Sequence[Mapping[str, Any]], kind: str) -> list[Any]:
    """bioimageio.spec processing objects (``kind``: ``pre`` or ``post``); invalid ops name the step."""
    from bioimageio.spec.model import v0_5
    from pydantic import TypeAdapter, ValidationError

    adapter = TypeAdapter(v0_5.PreprocessingDescr if kind == "pre" else v0_5.PostprocessingDescr)
    out = []
    for op in ops:
        try:
            kwargs = op.get("kwargs") or {}
            out.append(adapter.validate_python({"id": op["id"], **({"kwargs": kwargs} if kwargs else {})}))
        except ValidationError as e:
            first = e.errors()[0]
            raise PackagingError(
                f"{kind}processing step {op['id']!r} with kwargs {op.get('kwargs')} is not valid bioimage.io "
                f"spec 0.5: {'.'.join(map(str, first['loc']))}: {first['msg']}"
            ) from None
    return out


def _file(path: Path | None):
    if path is None:
        return None
    from bioimageio.spec.common import FileDescr

    return FileDescr(source=path)


def _data(t: TensorInfo):
    from bioimageio.spec.model import v0_5

    lo, hi = t.data_range
    if lo is None and hi is None:
        return v0_5.IntervalOrRatioDataDescr(type="float32")
    return v0_5.IntervalOrRatioDataDescr(type="float32", range=(lo, hi))


def input_descr(
    t: TensorInfo, info: PackagingInfo, geometry: Geometry, test_tensor: Path, sample_tensor: Path | None
):
    from bioimageio.spec.model import v0_5

    axes: list[Any] = [v0_5.BatchAxis()]
    for a in t.axes:
        if a == "c":
            axes.append(v0_5.ChannelAxis(channel_names=list(t.channel_names)))
        elif a in "zyx":
            axes.append(
                v0_5.SpaceInputAxis(
                    id=a,
                    size=v0_5.ParameterizedSize(min=geometry.min_size, step=geometry.step),
                    **_calibration(info, a),
                )
            )
        else:
            raise PackagingError(f"input axis {a!r} of {t.id!r} cannot be packaged: use c, z, y, x")
    return v0_5.InputTensorDescr(
        id=t.id,
        description=t.description[:128],
        axes=axes,
        test_tensor=_file(test_tensor),
        sample_tensor=_file(sample_tensor),
        data=_data(t),
        preprocessing=processing_descrs(with_float32_end(t.processing), "pre"),
    )


def _calibration(info: PackagingInfo, axis: str) -> dict[str, Any]:
    """Scale and unit of a space axis; none for uncalibrated training data (empty ``pixel_size``)."""
    if not info.pixel_size:
        return {}
    return {"scale": float(info.pixel_size[axis]), "unit": info.pixel_unit}


def output_descr(
    t: TensorInfo,
    info: PackagingInfo,
    geometry: Geometry,
    shape: tuple[int, ...],
    test_tensor: Path,
    sample_tensor: Path | None,
):
    """``shape``: the network's output shape for the test input (with batch), for index axes."""
    from bioimageio.spec.model import v0_5

    source = info.inputs[0].id
    axes: list[Any] = [v0_5.BatchAxis()]
    for k, a in enumerate(t.axes, start=1):
        if a == "c":
            axes.append(v0_5.ChannelAxis(channel_names=list(t.channel_names)))
        elif a == "i":
            axes.append(v0_5.IndexOutputAxis(id="index", size=int(shape[k])))
        else:
            axes.append(
                v0_5.SpaceOutputAxisWithHalo(
                    id=a,
                    size=v0_5.SizeReference(tensor_id=source, axis_id=a),
                    halo=geometry.halo,
                    **_calibration(info, a),
                )
                if geometry.halo
                else v0_5.SpaceOutputAxis(
                    id=a,
                    size=v0_5.SizeReference(tensor_id=source, axis_id=a),
                    **_calibration(info, a),
                )
            )
    return v0_5.OutputTensorDescr(
        id=t.id,
        description=t.description[:128],
        axes=axes,
        test_tensor=_file(test_tensor),
        sample_tensor=_file(sample_tensor),
        data=_data(t),
        postprocessing=processing_descrs(with_float32_end(t.processing), "post"),
    )


def weights_descr(exported: ExportedWeights, weight_authors: list[Any]):
    """The weights entries; the state dict (else TorchScript) is the parent of the other formats."""
    from bioimageio.spec.model import v0_5

    files = exported.files
    version = v0_5.Version(exported.torch_version)
    root = "pytorch_state_dict" if "pytorch_state_dict" in files else "torchscript"
    if root not in files:
        raise PackagingError("a package needs pytorch_state_dict or torchscript weights besides onnx")

    def parent(fmt: str) -> str | None:
        return None if fmt == root else root

    entries: dict[str, Any] = {}
    if "pytorch_state_dict" in files:
        arch = exported.architecture
        assert arch is not None
        entries["pytorch_state_dict"] = v0_5.PytorchStateDictWeightsDescr(
            source=files["pytorch_state_dict"],
            architecture=v0_5.ArchitectureFromFileDescr(
                source=arch.source, callable=arch.callable, kwargs=dict(arch.kwargs)
            ),
            pytorch_version=version,
            authors=weight_authors,
        )
    if "torchscript" in files:
        entries["torchscript"] = v0_5.TorchscriptWeightsDescr(
            source=files["torchscript"],
            pytorch_version=version,
            parent=parent("torchscript"),
            comment=f"torch.jit.{exported.torchscript_method} by emzoo, checked against the PyTorch module",
        )
    if "onnx" in files:
        entries["onnx"] = v0_5.OnnxWeightsDescr(
            source=files["onnx"],
            opset_version=exported.opset_version,
            parent=parent("onnx"),
            comment="torch.onnx.export (dynamo=False) by emzoo, checked against the PyTorch module",
        )
    return v0_5.WeightsDescr(**entries)


def training_data_descr(info: PackagingInfo, documentation: Path | None):
    """An inline dataset description (no bioimage.io id: those are looked up online)."""
    from bioimageio.spec.dataset.v0_3 import DatasetDescr

    td = info.training_data
    if td.get("citation"):
        cite = cite_entries(({"text": td["citation"], "doi": td.get("doi", ""), "url": td.get("url", "")},))
    else:
        cite = cite_entries(info.cite)
    description = td.get("description") or f"Training data of {info.name}. Split: {td.get('split', '?')}."
    if not is_url(td.get("source")):
        description = f"{description} Source: {td['source']}."
    name = " ".join(re.sub(r"[^A-Za-z0-9_+\-() ]", " ", td["name"]).split())[:128]
    return DatasetDescr(
        name=name,
        description=description,
        source=data_url(td, info.cite),
        license=td.get("license") or None,
        cite=cite,
        tags=list(dict.fromkeys(["electron-microscopy", *info.tags[:3]])),
        documentation=_file(documentation),
    )


def _metrics_long(names: Sequence[str], short: Sequence[str], long: Mapping[str, str]) -> list[str]:
    """``metrics_long``: the use case's description of each metric, led by the full name where bioimage.io
    holds only a shortened one (so that readers find the name emzoo uses everywhere else)."""
    out = []
    for name, abbreviation in zip(names, short, strict=True):
        text = long.get(name, name)
        out.append(text if abbreviation == name or text == name else f"{name}: {text}")
    return out


def evaluation_descr(ev: Mapping[str, Any], info: PackagingInfo):
    """``config.bioimageio.evaluations[0]`` from the use case's ``evaluate`` result."""
    from bioimageio.spec.model import v0_5

    metrics = {k: float(v) for k, v in ev["metrics"].items()}
    short = short_names(list(metrics))  # bioimage.io allows 16 characters; metrics_long has the name
    baseline = ev.get("baseline") or {}
    summary = ""
    if baseline.get("metrics"):
        pairs = ", ".join(
            f"{k} {metrics.get(k, float('nan')):.4g} vs {float(v):.4g}"
            for k, v in baseline["metrics"].items()
        )
        summary = f"This model vs the classical baseline '{baseline.get('name', 'baseline')}': {pairs}."
    for other, values in (ev.get("other_baselines") or {}).items():  # {name: metrics}
        pairs = ", ".join(f"{k} {float(v):.4g}" for k, v in values.items() if k in metrics)
        summary += f" Also '{other}': {pairs}." if pairs else ""
    name = ev.get("dataset_name") or info.training_data["name"]
    source = ev.get("dataset_source") or data_url(info.training_data, info.cite)
    if not is_url(source):
        raise PackagingError(
            "the evaluation needs an http(s) address of its data set (bioimage.io requires "
            "dataset_source): put one in PackagingInfo.training_data['source'] or in the evaluate() "
            "result as 'dataset_source'"
        )
    return v0_5.Evaluation(
        dataset_id=slug(ev.get("dataset_id") or name)[:64].strip("-"),
        dataset_source=source,
        dataset_role=ev.get("dataset_role", "test"),
        sample_count=int(ev["sample_count"]),
        evaluation_factors=["overall"],
        evaluation_factors_long=[
            f"all {int(ev['sample_count'])} images of the {ev.get('dataset_role', 'test')} split"
        ],
        metrics=short,
        metrics_long=_metrics_long(list(metrics), short, ev.get("metrics_long") or {}),
        results=[[v] for v in metrics.values()],
        results_summary=summary or None,
    )


def training_details(training: Mapping[str, Any]):
    """``config.bioimageio.training`` from the use case's parameters (known keys only)."""
    from bioimageio.spec.model import v0_5

    keys = {
        "training_epochs": ("epochs", "training_epochs", "max_epochs"),
        "training_batch_size": ("batch_size", "training_batch_size"),
        "initial_learning_rate": ("lr", "learning_rate", "initial_learning_rate"),
        "loss_function": ("loss", "loss_function"),
        "optimizer": ("optimizer",),
        "learning_rate_schedule": ("schedule", "lr_schedule", "learning_rate_schedule"),
    }
    found: dict[str, Any] = {}
    for field_name, names in keys.items():
        for n in names:
            if training.get(n) is not None:
                found[field_name] = training[n]
                break
    for f in ("loss_function", "optimizer", "learning_rate_schedule"):
        if f in found:
            found[f] = str(found[f])
    for f in ("training_epochs", "training_batch_size", "initial_learning_rate"):
        if f in found:
            try:
                found[f] = float(found[f])
            except (TypeError, ValueError):
                del found[f]
    return v0_5.TrainingDetails(**found)


def tolerance_descrs(tolerances: Sequence[Tolerance]) -> list[Any]:
    """bioimageio.spec's ``reproducibility_tolerance`` entries of emzoo's tolerance records."""
    from bioimageio.spec.model import v0_5

    return [
        v0_5.ReproducibilityTolerance(
            relative_tolerance=t.rtol,
            absolute_tolerance=t.atol,
            mismatched_elements_per_million=t.mismatched_per_million,
            output_ids=list(t.output_ids),
            **({"weights_formats": list(t.weights_formats)} if t.weights_formats else {}),
        )
        for t in tolerances
    ]


def config_descr(
    *,
    tolerances: list[Any],
    evaluations: list[Any],
    info: PackagingInfo,
    training: Mapping[str, Any],
    parameter_count: int,
    architecture_type: str | None,
    emzoo: Mapping[str, Any],
):
    from bioimageio.spec.model import v0_5

    return v0_5.Config(
        bioimageio=v0_5.BioimageioConfig(
            reproducibility_tolerance=tolerances,
            evaluations=evaluations,
            task=info.task,
            modality="electron microscopy",
            architecture_type=(architecture_type or None) and architecture_type[:32],
            model_parameter_count=parameter_count,
            training=training_details(training),
            bias_risks_limitations=v0_5.BiasRisksLimitations(limitations=info.limitations),
        ),
        emzoo=dict(emzoo),
    )


def export_record(e: ExportedWeights) -> dict[str, Any]:
    """How the weights were exported and how closely each format matched PyTorch (``config.emzoo``):
    per format the largest difference over the checked inputs and the smallest tolerance."""
    parity: dict[str, dict[str, Any]] = {}
    for c in e.checks:
        entry = parity.setdefault(
            c.weight_format, {"max_abs_diff": 0.0, "tolerance": c.tolerance, "inputs": []}
        )
        entry["max_abs_diff"] = max(entry["max_abs_diff"], float(f"{c.max_abs_diff:.3g}"))
        entry["tolerance"] = min(entry["tolerance"], float(f"{c.tolerance:.3g}"))
        entry["inputs"].append("x".join(map(str, c.input_shape)))
    return {
        "opset_version": e.opset_version,
        "torchscript_method": e.torchscript_method,
        "torch_version": e.torch_version,
        "parity": parity,
    }


def short_error(e: Exception) -> str:
    """The first few field errors of a pydantic ``ValidationError`` (else the message), on one line."""
    errors = getattr(e, "errors", None)
    if callable(errors):
        try:
            return "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {' '.join(str(err['msg']).split())[:200]}"
                for err in errors()[:3]
            )
        except (TypeError, KeyError):
            pass
    return " ".join(str(e).split())[:400]
