"""Write a calibrated copy of a package: its ``config.emzoo.ood`` statistics, the measured separation
as a ``config.bioimageio.evaluations`` entry, and an "Out-of-distribution check" section in its
card. Everything goes through bioimageio.spec (loaded, changed with ``model_copy``, saved as a zip
or a folder and read back); the package is written to a hidden partial path and moved into place
only when it validates, so the original is never touched unless it is the output (``overwrite``).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emzoo.atomic import atomic_path
from emzoo.errors import PackageError, UsageError, literal
from emzoo.tasks.ood.calibrate import Calibration
from emzoo.tasks.ood.embedding import FROM_PREDICTION, MODEL_FILE, REFERENCE_FILE
from emzoo.tasks.ood.score import HELD_OUT_MARGIN, HELD_OUT_QUANTILE

SECTION = "## Out-of-distribution check"
METRICS = ("auroc", "flagged", "false_warnings")
METRICS_LONG = (
    "AUROC of the out-of-distribution score: held-out in-distribution images vs images of this type",
    "share of the images of this type flagged out of distribution at the package's threshold",
    "false-warning rate: share of the held-out in-distribution images flagged (the same for every type)",
)


def write_calibrated(
    model: str | Path,
    output: str | Path,
    result: Calibration,
    *,
    command: str | None = None,
    overwrite: bool = False,
    type_notes: dict[str, str] | None = None,
) -> Path:
    """Write ``model`` with ``result`` recorded to ``output`` (``.zip``: a zip, else a folder).
    ``command`` (how the statistics were made) goes to the card; ``type_notes`` describe each
    other image type (the evaluation's long factor names)."""
    from bioimageio.spec import InvalidDescr, load_description, load_model_description

    output = Path(output)
    source = Path(model)
    if output.exists() and not overwrite:
        raise UsageError(
            f"{literal(output)} exists already: choose another output or replace it ({{overwrite=True}})"
        )
    descr = load_model_description(_rdf(source), perform_io_checks=False)
    emzoo = dict(descr.config.emzoo or {}) if hasattr(descr.config, "emzoo") else {}
    stage = Path(tempfile.mkdtemp(prefix="emzoo-calibrate-"))
    try:
        entry, files = embedding_files(result, stage)
        emzoo["ood"] = {**result.stats.to_dict(), **entry, **measured_record(result)}
        bioimageio = descr.config.bioimageio
        kept = [e for e in bioimageio.evaluations if list(e.metrics[:1]) != [METRICS[0]]]
        if result.others:
            kept.append(_evaluation(result, kept, type_notes or {}))
        config = descr.config.model_copy(
            update={"emzoo": emzoo, "bioimageio": bioimageio.model_copy(update={"evaluations": kept})}
        )
        from bioimageio.spec.common import FileDescr

        ours = (MODEL_FILE, REFERENCE_FILE)  # replaced by this calibration's (or dropped without one)
        attachments = [a for a in descr.attachments if Path(str(a.source)).name not in ours]
        attachments += [FileDescr(source=f) for f in files]
        update: dict[str, Any] = {"config": config, "attachments": attachments}
        card = _card(descr, source)
        if card is not None:
            name = Path(str(descr.documentation.source)).name
            (stage / name).write_text(with_section(card, card_section(result, command)), encoding="utf-8")
            update["documentation"] = FileDescr(source=stage / name)
        _save(descr.model_copy(update=update), output, load_description, InvalidDescr)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return output


def _rdf(source: Path) -> Path:
    if source.is_dir():
        return source / "rdf.yaml"
    return source


def _save(descr, output: Path, load_description, invalid) -> None:
    from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder

    with atomic_path(output) as partial:
        if output.suffix.lower() == ".zip":
            save_bioimageio_package(descr, output_path=partial)
            check = partial
        else:
            save_bioimageio_package_as_folder(descr, output_path=partial)
            check = partial / "rdf.yaml"
        loaded = load_description(check, perform_io_checks=True)
        if isinstance(loaded, invalid):
            from emzoo.package.validation import one_paragraph

            raise PackageError(one_paragraph(str(output), loaded.validation_summary))
        if output.is_dir():  # the package it replaces (a folder cannot be renamed over)
            shutil.rmtree(output)
        elif output.exists():
            output.unlink()


def embedding_files(result: Calibration, folder: Path) -> tuple[dict[str, Any], list[Path]]:
    """``{"embedding": ...}`` for ``config.emzoo.ood`` and the two files it names, written to
    ``folder`` (the package's attachments); ``({}, [])`` for a calibration without network features."""
    record = result.embedding
    if record is None:
        return {}, []
    import numpy as np

    from emzoo.cache import sha256_file
    from emzoo.tasks.ood.embedding import GRID, REFERENCE_GRID, reference_table

    model, table = folder / MODEL_FILE, folder / REFERENCE_FILE
    model.write_bytes(record.model)
    np.save(table, reference_table(record.fit), allow_pickle=False)
    entry = {
        "model": MODEL_FILE,
        "model_sha256": sha256_file(model),
        "reference": REFERENCE_FILE,
        "reference_sha256": sha256_file(table),
        "node": record.node,
        "cells": len(record.fit.vectors),
        "threshold": round(record.fit.threshold, 6),
        "spacing": round(record.fit.spacing, 6),
        "read": record.read,
        "rule": (
            f"the network up to the input of its last pooling step; per {GRID}x{GRID} cell of the central "
            "crop, channel means and standard deviations"
            + (" read during the prediction of the whole image" if record.read == FROM_PREDICTION else "")
            + "; score: median over the cells of the cosine distance to the nearest training cell "
            f"(training images: {REFERENCE_GRID}x{REFERENCE_GRID} crops); threshold: 4 x the median "
            "leave-one-image-out score"
            + (
                f", or, where larger, {HELD_OUT_MARGIN:g} x the {HELD_OUT_QUANTILE:g} quantile of the "
                "held-out images' scores"
                if result.cross_fitted is not None
                else ""
            )
        ),
    }
    return {"embedding": entry}, [model, table]


def measured_record(result: Calibration) -> dict[str, Any]:
    """The separation and false-warning rate, for ``config.emzoo.ood.measured``."""
    measured: dict[str, Any] = {}
    rate = result.false_warning_rate()
    if rate is not None:
        measured["false_warning_rate"] = round(rate, 4)
        measured["held_out_images"] = len(result.held_out)
    if result.others:
        measured["separation"] = {
            kind: {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            for kind, row in result.separation().items()
        }
    return {"measured": measured} if measured else {}


def _evaluation(result: Calibration, existing: Sequence[Any], notes: dict[str, str]):
    """The separation as a bioimage.io evaluation: one factor per other image type (and overall)."""
    from bioimageio.spec.model import v0_5

    table = result.separation()
    rate = result.false_warning_rate()
    first = existing[0] if existing else None
    factors = list(table)
    long = [
        notes.get(kind, f"{row['images']} images of type {kind}")
        if kind != "overall"
        else f"all {row['images']} images of the other types together"
        for kind, row in table.items()
    ]
    nan = float("nan")
    results = [
        [round(table[k]["auroc"], 4) for k in factors],
        [round(table[k]["flagged"], 4) for k in factors],
        [round(rate, 4) if rate is not None else nan for _ in factors],
    ]
    summary = (
        f"Out-of-distribution check: {len(result.held_out)} held-out in-distribution images vs "
        f"{sum(len(v) for v in result.others.values())} images of {len(result.others)} other EM image "
        f"types; overall AUROC {table.get('overall', next(iter(table.values())))['auroc']:.3f}, "
        + (f"false-warning rate {rate:.3f} " if rate is not None else "")
        + f"at the threshold {result.stats.threshold:.3g}."
    )
    return v0_5.Evaluation(
        dataset_id="out-of-distribution-em-image-types",
        dataset_source=str(first.dataset_source) if first is not None else "https://bioimage.io",
        dataset_role="independent",
        sample_count=len(result.held_out) + sum(len(v) for v in result.others.values()),
        evaluation_factors=factors,
        evaluation_factors_long=long,
        metrics=list(METRICS),
        metrics_long=list(METRICS_LONG),
        results=results,
        results_summary=summary,
    )


def _card(descr, source: Path) -> str | None:
    """The package's card text (None when it has none, or not as a Markdown file)."""
    if descr.documentation is None:
        return None
    from bioimageio.spec.common import RelativeFilePath

    doc = descr.documentation.source
    if isinstance(doc, RelativeFilePath):
        path = doc.get_absolute(descr.root)
        try:
            return Path(str(path)).read_text(encoding="utf-8")
        except OSError:
            pass
    from bioimageio.spec.utils import download

    found = download(doc)  # a reader of the bytes (inside a zip package: no path on disk)
    data = found.read() if hasattr(found, "read") else Path(found.path).read_bytes()
    return data.decode("utf-8")


def with_section(card: str, section: str) -> str:
    """The card with its out-of-distribution section replaced, or added before the "Reproduce this
    model" section (at the end when there is none)."""
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", flags=re.M | re.S)
    if pattern.search(card):
        return pattern.sub(lambda _: section + "\n", card, count=1)
    anchor = card.find("\n## Reproduce this model")
    if anchor < 0:
        return card.rstrip("\n") + "\n\n" + section
    return card[: anchor + 1] + section + "\n" + card[anchor + 1 :]


def _worst_embedding(result: Calibration) -> str:
    if result.embedding is None:
        return ""
    worst = max((h.embedding_score or 0.0) for h in result.held_out)
    return f"; worst network-feature score {worst:.3g}, threshold {result.embedding.fit.threshold:.3g}"


def card_section(result: Calibration, command: str | None) -> str:
    """The card's "Out-of-distribution check" section: what is compared, the calibration, and the
    measured separation."""
    s = result.stats
    lines = [
        SECTION,
        "",
        f"`emzoo predict` scores every input against the features of the {len(result.reference)} "
        "reference (training) images recorded in `config.emzoo.ood`: noise level and the correlation of "
        "the noise along x and y, how unevenly local contrast is spread (8 and 32 px blocks), the slope "
        "of the power spectrum between octaves (2 to 32 px), how heavy-tailed each scale's contrast is "
        "(a Laplacian pyramid's bands, 1 to 8 px), the shape of the intensity histogram, and "
        "statistics of the model's outputs (low values, correlation with the input, how concentrated "
        "their mass is, confident pixels of probabilities); the score is the distance to the nearest "
        "reference image in standardised units. An input "
        f"above the threshold ({s.threshold:.3g}; image features alone, before the model runs: "
        f"{s.threshold_image:.3g}) is reported out of distribution with its reasons, in the summary and "
        "in the provenance record (`--ood warn`, the default; `--ood skip` writes no output for it, "
        f"`--ood fail` stops the run). The thresholds are {s.spacings:g} typical spacings of the reference "
        "images: their median leave-one-out score (each image against the others) times "
        f"{s.spacings:g}"
        + (
            f", or, where larger, {HELD_OUT_MARGIN:g} x the {HELD_OUT_QUANTILE:g} quantile of the held-out "
            "in-distribution images' scores (training images that are near-duplicates of each other lie "
            "closer together than a new acquisition lies to them)"
            if result.cross_fitted is not None
            else ""
        )
        + ".",
    ]
    if result.embedding is not None:
        e = result.embedding
        lines[-1] += (
            " The network's own features count too: the package's network up to the input of its last "
            f"pooling step (`{e.node}`, kept as `{MODEL_FILE}`) describes the central crop of an input "
            "cell by cell (channel means and standard deviations in a 2 x 2 grid"
            + (
                ", read during the prediction of the whole image: no second pass"
                if e.read == FROM_PREDICTION
                else ""
            )
            + "), and the median cosine "
            f"distance of its cells to the nearest of the {len(e.fit.vectors)} training cells "
            f"({REFERENCE_FILE}) is a second score, with a threshold of the same rule "
            f"({e.fit.threshold:.3g}); an input above either threshold is out of distribution."
        )
    rate = result.false_warning_rate()
    if result.others:
        lines += [
            "",
            "Measured separation (AUROC: held-out in-distribution images vs each other image type; "
            "flagged: share of that type above the threshold"
            + (" or the network features' threshold" if result.embedding is not None else "")
            + "):",
            "",
            "| image type | images | AUROC | flagged |",
            "|---|---|---|---|",
        ]
        for kind, row in result.separation().items():
            lines.append(f"| {kind} | {row['images']} | {row['auroc']:.3f} | {row['flagged']:.0%} |")
    if rate is not None:
        worst = max(h.score for h in result.held_out)
        how = (
            ", cross-fitted: each half of them judged by the thresholds the other half gives"
            if result.cross_fitted is not None
            else ""
        )
        lines += [
            "",
            f"False-warning rate on the {len(result.held_out)} held-out in-distribution images{how}: "
            f"{rate:.1%} (worst score {worst:.3g}{_worst_embedding(result)}).",
        ]
    if command:
        lines += ["", "Recorded (and recorded again after retraining) with:", "", "```bash", command, "```"]
    return "\n".join(lines) + "\n"
