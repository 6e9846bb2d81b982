"""What the widget shows of a package before it runs: the repository's zoo models and a card summary
(name, description, task, held-out metrics), read as ``emzoo info`` reads them.

>>> _scalar([[0.25]]), _scalar(3), _scalar("n/a")
(0.25, 3, 'n/a')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import emzoo
from emzoo.package.load import RDF_NAMES, ModelPackage, open_model
from emzoo.package.spec import ModelSpec


def zoo_models(root: Path | None = None) -> dict[str, Path]:
    """The packages in ``zoo_models/`` beside the installed source (a clone installed with
    ``pip install -e``), by folder name; {} when there is none."""
    root = root if root is not None else Path(emzoo.__file__).resolve().parents[1] / "zoo_models"
    if not root.is_dir():
        return {}
    return {
        p.name: p
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.name.startswith((".", "_")) and any((p / n).is_file() for n in RDF_NAMES)
    }


@dataclass(frozen=True)
class Metric:
    name: str
    value: Any
    baseline: Any = None  # the classical baseline's value, measured the same way (config.emzoo)


@dataclass(frozen=True)
class Card:
    """The summary of a package the widget shows."""

    name: str
    description: str
    task: str = ""
    inputs: tuple[str, ...] = ()  # "id: [axes] dtype"
    outputs: tuple[str, ...] = ()
    evaluation: str = ""  # where the metrics were measured (dataset, role, samples)
    metrics: tuple[Metric, ...] = ()
    baseline: str = ""  # the baseline's name

    def lines(self) -> list[str]:
        """The card as plain text lines."""
        out = [self.name, self.description]
        if self.task:
            out.append(f"task: {self.task}")
        out += [f"input {t}" for t in self.inputs] + [f"output {t}" for t in self.outputs]
        if self.metrics:
            out.append(f"held-out metrics ({self.evaluation})" if self.evaluation else "held-out metrics")
            for m in self.metrics:
                versus = f" (baseline {_fmt(m.baseline)})" if m.baseline is not None else ""
                out.append(f"  {m.name}: {_fmt(m.value)}{versus}")
            if self.baseline:
                out.append(f"  baseline: {self.baseline}")
        else:
            out.append("no held-out metrics in the package")
        return out


def _scalar(value: Any) -> Any:
    """bioimage.io writes each result as a list per evaluation factor: ``[[0.8]]`` -> ``0.8``."""
    while isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    return value


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _metrics(spec: ModelSpec) -> tuple[str, tuple[Metric, ...], str]:
    """The held-out metrics: emzoo's own record (with its baseline) when there is one, else the
    first of ``config.bioimageio.evaluations``."""
    own = spec.emzoo.get("evaluation") or {}
    if isinstance(own.get("metrics"), dict) and own["metrics"]:
        baseline = own.get("baseline") or {}
        values = baseline.get("metrics") or {}
        where = ", ".join(
            str(x)
            for x in (
                own.get("dataset_name"),
                own.get("dataset_role"),
                f"{own['sample_count']} samples" if own.get("sample_count") else None,
            )
            if x
        )
        metrics = tuple(Metric(k, _scalar(v), _scalar(values.get(k))) for k, v in own["metrics"].items())
        return where, metrics, str(baseline.get("name") or "")
    for ev in spec.evaluations:
        names, results = ev.get("metrics") or [], ev.get("results") or []
        if names:
            where = ", ".join(
                str(x)
                for x in (
                    ev.get("dataset_id"),
                    ev.get("dataset_role"),
                    f"{ev['sample_count']} samples" if ev.get("sample_count") else None,
                )
                if x
            )
            metrics = tuple(Metric(n, _scalar(v)) for n, v in zip(names, results, strict=False))
            return where, metrics, ""
    return "", (), ""


def card_of(package: ModelPackage | ModelSpec) -> Card:
    """The card summary of an opened package (or its spec)."""
    spec = package.spec if isinstance(package, ModelPackage) else package
    where, metrics, baseline = _metrics(spec)
    return Card(
        name=spec.name + (f" (version {spec.version})" if spec.version else ""),
        description=spec.description,
        task=str(spec.emzoo.get("task") or ""),
        inputs=tuple(f"{t.id}: [{t.describe_axes()}] {t.dtype}" for t in spec.inputs),
        outputs=tuple(f"{t.id}: [{t.describe_axes()}] {t.dtype}" for t in spec.outputs),
        evaluation=where,
        metrics=metrics,
        baseline=baseline,
    )


def open_card(source: str | Path) -> tuple[ModelPackage, Card]:
    """Open a package (zip, folder, rdf.yaml) and make its card; raises emzoo's one-line errors."""
    package = open_model(source)
    return package, card_of(package)
