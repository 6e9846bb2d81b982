"""The counting output kind (:mod:`emzoo.drivers.kinds`): per image a ``<stem>_centres.csv`` (with
diameters when the model gives sizes), a ``<stem>_sizes.png`` histogram when it does and, with
``overlay``, a ``<stem>_overlay.png``; per run the ``counts.csv`` table, merged with an earlier run's
rows in the same folder (skipped images keep theirs), and ``sizes.png``, the histogram of the
particles of the images predicted in this run."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.drivers.kinds import RunOutputs, Sample, SampleOutputs
from emzoo.drivers.options import OutputOptions
from emzoo.package.spec import ModelSpec
from emzoo.tasks import counting, counting_figures

COUNTS_TABLE = "counts.csv"
CENTRES = "centres"  # the key of the per-image points among a sample's extra outputs
SIZES = "sizes"  # ... and of the per-image size histogram
RUN_SIZES = "sizes.png"
_DIAMETERS = "diameters_px"  # the row's particle diameters (not a counts.csv column)


class CountingKind:
    """Counts and centres of a density-map model (``config.emzoo.counting``)."""

    name = "counting"
    streams = False  # centres are local maxima across chunk borders: the whole map is needed

    def __init__(self, spec: ModelSpec):
        self.config = counting.counting_config(spec)

    def extra_paths(self, base: Path) -> dict[str, Path]:
        paths = {CENTRES: base.with_name(f"{base.name}_centres.csv")}
        if self.config.sizes is not None:
            paths[SIZES] = base.with_name(f"{base.name}_sizes.png")
        return paths

    def finish_sample(self, sample: Sample, options: OutputOptions) -> SampleOutputs:
        result = counting.count_outputs(sample.outputs, self.config)
        result = counting.in_image_pixels(result, sample.image, sample.outputs[self.config.output])
        nm = counting.nm_per_pixel(sample.image.meta)
        row = counting.summary_row(sample.relative, result, nm_per_px=nm)
        done = SampleOutputs(row=row)
        if CENTRES in sample.todo:
            done.written.append(counting.write_centres_csv(sample.todo[CENTRES], result, nm_per_px=nm))
        if result.diameters is not None:
            row[_DIAMETERS] = result.diameters
            row["nm_per_px"] = nm
            if SIZES in sample.todo:
                title = f"{sample.relative}: particle diameters"
                done.written.append(
                    counting_figures.render_size_histogram(
                        result.diameters, sample.todo[SIZES], title=title, nm_per_px=nm
                    )
                )
        if options.overlay and result.axes == "yx":
            overlay = sample.base.with_name(f"{sample.base.name}_overlay.png")
            image = sample.image
            done.written.append(
                counting_figures.render_overlay(
                    np.asarray(image.data), result, overlay, axes=image.meta.axes, nm_per_px=nm
                )
            )
        return done

    def finish_run(self, out_dir: Path, rows: list[dict[str, Any]]) -> RunOutputs:
        if not rows:
            return RunOutputs()
        path = out_dir / COUNTS_TABLE
        table = merge_rows(path, rows)
        written = [counting.write_counts_csv(path, table)]
        notes = [f"counts of {len(table)} images in {path}"]
        sized = [row for row in rows if _DIAMETERS in row]
        if sized:
            # nm only when every image of the run has the same known pixel size
            scales = {row["nm_per_px"] for row in sized}
            nm = scales.pop() if len(scales) == 1 else None
            diameters = np.concatenate([row[_DIAMETERS] for row in sized])
            title = f"particle diameters of {len(sized)} images"
            run_sizes = out_dir / RUN_SIZES
            written.append(
                counting_figures.render_size_histogram(diameters, run_sizes, title=title, nm_per_px=nm)
            )
            notes.append(f"size histogram of {len(diameters)} particles in {run_sizes}")
        return RunOutputs(written, notes)


def merge_rows(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This run's rows over those of an earlier run's table at ``path``, sorted by file."""
    by_file: dict[str, dict] = {}
    if path.is_file():
        with open(path, newline="") as f:
            by_file = {row["file"]: row for row in csv.DictReader(f)}
    by_file.update({str(row["file"]): row for row in rows})
    return [by_file[k] for k in sorted(by_file)]
