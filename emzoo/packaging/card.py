"""The README model card of a package (Markdown): what it does, on what data, how well, how to run it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emzoo.packaging.info import PackagingInfo, TensorInfo


@dataclass(frozen=True)
class CardFacts:
    """Everything the card states besides the :class:`PackagingInfo`."""

    input_axes: str  # e.g. "batch, channel(1), y[52+4n], x[52+4n]"
    output_axes: dict[str, str]
    halo: int
    step: int
    min_size: int
    receptive_field: int | None
    weight_formats: tuple[str, ...]
    intensity: dict[str, Any]
    evaluation: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    tolerance: str = ""
    file_name: str = "model.zip"  # the package as the card's commands name it (see run_section)
    preprocessing: str = ""
    postprocessing: dict[str, str] = field(default_factory=dict)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def metrics_table(evaluation: dict[str, Any]) -> str:
    """Model and baseline side by side, one row per metric."""
    metrics = evaluation.get("metrics", {})
    baseline = evaluation.get("baseline") or {}
    base_metrics = baseline.get("metrics", {})
    base_name = baseline.get("name", "classical baseline")
    names = list(metrics) + [m for m in base_metrics if m not in metrics]
    rows = ["| metric | this model | " + base_name + " |", "|---|---|---|"]
    for m in names:
        rows.append(f"| {m} | {_fmt(metrics.get(m, '-'))} | {_fmt(base_metrics.get(m, '-'))} |")
    return "\n".join(rows)


def _stats_text(stats: dict[str, Any]) -> str:
    """``mean M, std S, 1st/99th percentiles P1/P99`` of intensity statistics."""
    return (
        f"mean {_fmt(stats.get('mean'))}, std {_fmt(stats.get('std'))}, 1st/99th percentiles "
        f"{_fmt(stats.get('p1'))}/{_fmt(stats.get('p99'))}"
    )


def _group_stats(groups: dict[str, Any]) -> str:
    """The statistics of each kind of contrast of the training images, where they mix kinds."""
    return "".join(
        f"; {name.replace('_', ' ')} ({g.get('n_images', '?')} images): {_stats_text(g)}"
        for name, g in groups.items()
    )


def _bullets(d: dict[str, Any]) -> str:
    return "\n".join(f"- **{k}**: {_fmt(v)}" for k, v in d.items()) or "- (not recorded)"


def run_section(package: str) -> str:
    """The card's "How to run it": commands that run as written from the folder ``package`` is named
    relative to (e.g. ``zoo_models/NAME`` from the repository root), on the package's own sample image
    when it is a folder, on a placeholder ``IMAGE.tif`` when it is a zip."""
    sample = "IMAGE.tif" if package.lower().endswith(".zip") else f"{package}/sample_input.tif"
    where = (
        f"`IMAGE.tif` stands for your image; the commands run from the folder that holds `{package}`"
        if sample == "IMAGE.tif"
        else f"the commands run from the folder that holds `{package}`, on the package's own sample image"
    )
    return (
        "## How to run it\n\n"
        "emzoo is installed from its source repository (it is not on a package index): in a clone of it, "
        '`pip install -e ".[cpu]"` (ONNX Runtime on the CPU; `[gpu]` for NVIDIA GPUs, `[train]` for the '
        "PyTorch weights). Then, with emzoo (ONNX Runtime, tiled, any image size; "
        f"{where}):\n\n"
        "```bash\n"
        f"emzoo predict {package} {sample} -o predictions/\n"
        f"emzoo test {package}\n"
        "```\n\n"
        "```python\n"
        "from emzoo import Predictor\n"
        "from emzoo.io import read_image\n\n"
        f'predictor = Predictor("{package}")\n'
        f'outputs = predictor.predict(read_image("{sample}"))\n'
        "```\n\n"
        "With bioimageio.core (choose the ONNX weights: the default is the slowest format here):\n\n"
        "```bash\n"
        f"bioimageio test {package}\n"
        f"bioimageio predict {package} --inputs {sample} --outputs out.tif --weight-format onnx\n"
        "```\n\n"
        "```python\n"
        "from bioimageio.core import create_prediction_pipeline, load_model_description\n\n"
        f'pp = create_prediction_pipeline(load_model_description("{package}"), weights_format="onnx")\n'
        "```"
    )


def shown_package(output: str | Path) -> str:
    """``output`` as a card's commands name it: relative to the working folder when inside it
    (``zoo_models/NAME`` when packaged from the repository root), else its name."""
    path = Path(output).resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name


def render_card(info: PackagingInfo, facts: CardFacts) -> str:
    """The Markdown text of README.md."""
    unit = info.pixel_unit
    pixel = ", ".join(f"{a}: {s:g} {unit}" for a, s in info.pixel_size.items()) or "not calibrated"
    td = info.training_data
    stats = facts.intensity
    ev = facts.evaluation
    if ev:
        role = ev.get("dataset_role", "test")
        unseen = ", never seen in training or model selection" if role in ("test", "independent") else ""
        validation = (
            f"Evaluated through the packaged model (emzoo's runtime, as users run it) on "
            f"{ev.get('sample_count', '?')} images of the **{role}** split"
            f" ({ev.get('dataset_name', td.get('name', 'the training data set'))}){unseen}.\n\n"
            + metrics_table(ev)
            + (f"\n\nAll methods, per condition:\n\n{ev['table']}" if ev.get("table") else "")
        )
    else:
        validation = "No held-out evaluation was recorded for this package."
    if facts.receptive_field is not None:
        geometry = (
            f"Input sizes must be {facts.min_size} + {facts.step}·n px along each spatial axis "
            f"(the network down-samples by {facts.step}). The measured receptive-field radius is "
            f"{facts.receptive_field} px; the declared halo is {facts.halo} px, so tiled prediction "
            "(emzoo, bioimageio.core blockwise) matches a whole-image run away from the image border."
        )
    else:
        geometry = (
            f"One value per image: the whole image goes through the network in one call (sizes "
            f"{facts.min_size} + {facts.step}·n px; other sizes are padded by mirroring at the far end)."
        )
    outputs = "\n".join(f"- `{k}`: {v}" for k, v in facts.output_axes.items())
    post = "\n".join(f"- `{k}`: {v}" for k, v in facts.postprocessing.items())
    fmts = ", ".join(facts.weight_formats)
    sections = [
        f"# {info.name}\n\n{info.description}",
        f"## Task\n\n{info.task.capitalize()}.\n\n**Intended use.** {info.intended_use}",
        "## Intended data\n\n"
        f"Electron-microscopy images like the training data: pixel size {pixel}"
        + (
            ""
            if info.pixel_size
            else " (the training images carry no common calibration: the model "
            "works in pixels, so give it images whose structures have about the training data's size in px)"
        )
        + f". Raw training images have {_stats_text(stats)} ({stats.get('dtype', '?')}; computed from "
        f"{stats.get('source', 'the training images')})"
        + _group_stats(stats.get("groups") or {})
        + ". These numbers are stored in "
        "`config.emzoo.training_data` of rdf.yaml, so that tools can warn when an input looks unlike the "
        "training data."
        + (" Resample images of another pixel size before predicting." if info.pixel_size else ""),
        "## Training data and split\n\n"
        + _bullets({k: v for k, v in td.items() if v})
        + "\n\nFull description: `training_data` in rdf.yaml.",
        "## Training settings\n\n" + _bullets(facts.training),
        "## Validation\n\n" + validation,
        "## Limitations and failure modes\n\n" + info.limitations,
        "## Inputs and outputs\n\n"
        f"- input `{info.inputs[0].id}`: {facts.input_axes}; preprocessing: {facts.preprocessing}\n"
        f"{outputs}\n\nPost-processing:\n{post}\n\n{geometry}\n\n"
        f"Weight formats: {fmts} (all three produce the test output within the reproducibility "
        f"tolerance {facts.tolerance}).",
        run_section(facts.file_name),
        "## Citation\n\n"
        + "\n".join(
            f"- {c['text']}" + (f" doi:{c['doi']}" if c.get("doi") else f" {c.get('url', '')}")
            for c in info.cite
        ),
    ]
    for title, text in info.extra_card_sections.items():
        sections.append(f"## {title}\n\n{text}")
    return "\n\n".join(s.rstrip() for s in sections) + "\n"


def axes_text(
    t: TensorInfo, min_size: int, step: int, halo: int, shape: tuple[int, ...] | None = None
) -> str:
    """``batch, channel(raw), y[52+4n], x[52+4n]`` for an input; outputs (``shape`` given) refer to it."""
    parts = ["batch"]
    for k, a in enumerate(t.axes, start=1):
        if a == "c":
            parts.append(f"channel({', '.join(t.channel_names)})")
        elif a == "i":
            parts.append(f"index[{shape[k] if shape else '?'}]")
        elif shape is None:
            parts.append(f"{a}[{min_size}+{step}n]")
        else:
            parts.append(f"{a}[= input, halo {halo}]")
    return ", ".join(parts)


def ops_text(ops: Sequence[Mapping[str, Any]]) -> str:
    """``zero_mean_unit_variance(axes=['y', 'x']) -> ensure_dtype(dtype=float32)``."""
    return " -> ".join(
        op["id"] + (f"({', '.join(f'{k}={v}' for k, v in op['kwargs'].items())})" if op.get("kwargs") else "")
        for op in ops
    )


def data_card(info: PackagingInfo, stats: Mapping[str, Any]) -> str:
    """The documentation of the training data description (training_data.md)."""
    td = info.training_data
    lines = [f"# {td['name']}", "", td.get("description", "") or f"Training data of {info.name}.", ""]
    lines += [f"- **{k}**: {v}" for k, v in td.items() if k not in ("name", "description") and v]
    pixel = f"{info.pixel_size} {info.pixel_unit}" if info.pixel_size else "not calibrated (mixed or unknown)"
    lines += [f"- **pixel size**: {pixel}", ""]
    lines += ["Raw intensity statistics: " + ", ".join(f"{k} {v}" for k, v in stats.items()), ""]
    return "\n".join(lines)
