"""The counting output kind (:mod:`emzoo.drivers.kinds`): per image a ``<stem>_centres.csv`` and, with
``overlay``, a ``<stem>_overlay.png``; per run the ``counts.csv`` table, merged with an earlier run's
rows in the same folder (skipped images keep theirs)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.drivers.kinds import RunOutputs, Sample, SampleOutputs
from emzoo.drivers.options import OutputOptions
from emzoo.package.spec import ModelSpec
from emzoo.tasks import counting

COUNTS_TABLE = "counts.csv"
CENTRES = "centres"  # the key of the per-image points among a sample's extra outputs


class CountingKind:
    """Counts and centres of a density-map model (``config.emzoo.counting``)."""

    name = "counting"
    streams = False  # centres are local maxima across chunk borders: the whole map is needed

    def __init__(self, spec: ModelSpec):
        self.config = counting.counting_config(spec)

    def extra_paths(self, base: Path) -> dict[str, Path]:
        return {CENTRES: base.with_name(f"{base.name}_centres.csv")}

    def finish_sample(self, sample: Sample, options: OutputOptions) -> SampleOutputs:
        result = counting.count_outputs(sample.outputs, self.config)
        done = SampleOutputs(row=counting.summary_row(sample.relative, result))
        if CENTRES in sample.todo:
            done.written.append(counting.write_centres_csv(sample.todo[CENTRES], result))
        if options.overlay and result.axes == "yx":
            overlay = sample.base.with_name(f"{sample.base.name}_overlay.png")
            image = sample.image
            done.written.append(
                counting.render_overlay(np.asarray(image.data), result, overlay, axes=image.meta.axes)
            )
        return done

    def finish_run(self, out_dir: Path, rows: list[dict[str, Any]]) -> RunOutputs:
        if not rows:
            return RunOutputs()
        path = out_dir / COUNTS_TABLE
        table = merge_rows(path, rows)
        written = counting.write_counts_csv(path, table)
        return RunOutputs([written], [f"counts of {len(table)} images in {path}"])


def merge_rows(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This run's rows over those of an earlier run's table at ``path``, sorted by file."""
    by_file: dict[str, dict] = {}
    if path.is_file():
        with open(path, newline="") as f:
            by_file = {row["file"]: row for row in csv.DictReader(f)}
    by_file.update({str(row["file"]): row for row in rows})
    return [by_file[k] for k in sorted(by_file)]
