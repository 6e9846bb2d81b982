"""The classification output kind (:mod:`emzoo.drivers.kinds`): a classifier's logits read with the
probability score interpreter (:mod:`emzoo.tasks.psi`) of its package (``config.emzoo.psi``).

Selected by ``config.emzoo.output_kind: classification``. The package's output is one value per class
and image (the raw logits, a tensor without spatial axes: how the network turns an image of any
size into them is its own business, e.g. the mean of the logits of a fixed grid of patches); it is
written as ``<stem>_<output>.csv`` like any value output, and this kind adds per image
``<stem>_class.csv`` and per run ``classes.csv`` (one row per image, merged with an earlier run's rows
in the same folder), with the columns

``file, class, predicted, probability, psi_<class>...``

A volume predicted slice by slice (``--slices``) gets one verdict from the mean of its slices'
logits (its row in ``classes.csv``, first in ``<stem>_class.csv``), followed in ``<stem>_class.csv``
by one row per slice (``file`` ``<name>[z=K]``).

``class`` is the PSI verdict: a class name, ``unsure`` (several classes claim the image, or the best
only half-claims it) or ``unknown`` (no class claims it: an image type the network was not trained
on); ``predicted`` is the class of the largest logit, ``probability`` its softmax probability. The
run's summary says each image's verdict.

>>> import numpy as np
>>> from emzoo.tasks.psi import Psi
>>> rng = np.random.default_rng(0)
>>> labels = np.repeat([0, 1], 200)
>>> psi = Psi.fit(rng.normal(0, 1, (400, 2)) + 4 * np.eye(2)[labels], labels, ("a", "b"))
>>> row = class_row("x.tif", np.array([4.0, 0.0]), psi)
>>> row["class"], row["predicted"], round(row["probability"], 3)
('a', 'a', 0.982)
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax

from emzoo.atomic import write_text_atomic
from emzoo.drivers.kinds import RunOutputs, Sample, SampleOutputs
from emzoo.drivers.options import OutputOptions
from emzoo.errors import PackageError
from emzoo.io.meta import Image
from emzoo.package.spec import ModelSpec, TensorSpec
from emzoo.tasks.counting_files import merge_rows
from emzoo.tasks.psi import Psi

CLASSES_TABLE = "classes.csv"
CLASS = "class"  # the key of the per-image table among a sample's extra outputs


def class_row(file: str, logits: np.ndarray, psi: Psi) -> dict[str, Any]:
    """One image's row: the verdict, the argmax class, its probability and the PSI per class."""
    z = np.asarray(logits, np.float64).reshape(-1)
    scores = psi.scores(z[None])[0]
    best = int(np.argmax(z))
    row: dict[str, Any] = {
        "file": file,
        "class": psi.verdict(scores),
        "predicted": psi.classes[best],
        "probability": float(softmax(z)[best]),  # scipy's, stable for large logits
    }
    row.update({f"psi_{name}": float(s) for name, s in zip(psi.classes, scores, strict=True)})
    return row


def per_slice_logits(output: Image, classes: int) -> np.ndarray:
    """``(slices, classes)`` logits of an output: one row for an image, one per z slice of a volume
    predicted slice by slice (its outputs are stacked along z)."""
    data, axes = np.asarray(output.data, np.float64), output.meta.axes
    if "c" in axes and len(axes) == data.ndim:
        data = np.moveaxis(data, axes.index("c"), -1)
    return data.reshape(-1, classes)


def write_rows(path: Path, rows: list[dict[str, Any]], classes: tuple[str, ...]) -> Path:
    columns = ["file", "class", "predicted", "probability", *(f"psi_{c}" for c in classes)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return write_text_atomic(path, buf.getvalue())


def logits_output(spec: ModelSpec, psi: Psi) -> TensorSpec:
    """The value output with one channel per PSI class (``config.emzoo.classification.output`` names
    it when there are several)."""
    wanted = ((spec.emzoo or {}).get("classification") or {}).get("output")
    for t in spec.outputs:
        if wanted is not None and t.id != wanted:
            continue
        channels = next((a.channel_names for a in t.axes if a.type == "channel"), ())
        sizes = [a.size for a in t.axes if a.type == "channel"]
        if not t.spatial_axes and (len(channels) == len(psi.classes) or sizes == [len(psi.classes)]):
            return t
    raise PackageError(
        f"{spec.name!r}: config.emzoo.psi has {len(psi.classes)} classes, but no output without spatial "
        f"axes has {len(psi.classes)} channels" + (f" (looked for {wanted!r})" if wanted else "")
    )


def _verdict_note(row: dict[str, Any]) -> str:
    best = row["predicted"]
    return (
        f"{row['file']}: {row['class']} (argmax {best}, p {row['probability']:.2f}, "
        f"PSI {row['psi_' + best]:.2f})"
    )


class ClassificationKind:
    """Verdicts of a classifier whose package carries a PSI (``config.emzoo.psi``)."""

    name = "classification"
    streams = False  # one value per image: the whole image is needed

    def __init__(self, spec: ModelSpec):
        config = spec.emzoo or {}
        if "psi" not in config:
            raise PackageError(
                f"{spec.name!r} asks for the classification output kind but has no config.emzoo.psi "
                "(the probability score interpreter fitted on its training data)"
            )
        self.psi = Psi.from_dict(config["psi"])
        self.output = logits_output(spec, self.psi).id

    def extra_paths(self, base: Path) -> dict[str, Path]:
        return {CLASS: base.with_name(f"{base.name}_class.csv")}

    def finish_sample(self, sample: Sample, options: OutputOptions) -> SampleOutputs:
        file = sample.relative.as_posix()
        logits = per_slice_logits(sample.outputs[self.output], len(self.psi.classes))
        row = class_row(file, logits.mean(axis=0), self.psi)
        rows = [row]
        if len(logits) > 1:  # a volume predicted slice by slice: its row, then one per slice
            rows += [class_row(f"{file}[z={z}]", z_logits, self.psi) for z, z_logits in enumerate(logits)]
        done = SampleOutputs(row=row)
        if CLASS in sample.todo:
            done.written.append(write_rows(sample.todo[CLASS], rows, self.psi.classes))
        return done

    def finish_run(self, out_dir: Path, rows: list[dict[str, Any]]) -> RunOutputs:
        if not rows:
            return RunOutputs()
        path = out_dir / CLASSES_TABLE
        table = merge_rows(path, rows)
        written = [write_rows(path, table, self.psi.classes)]
        notes = [_verdict_note(row) for row in rows]
        tally = ", ".join(f"{n} {name}" for name, n in Counter(row["class"] for row in rows).most_common())
        notes.append(f"classes of {len(table)} images in {path}: {tally} (this run)")
        return RunOutputs(written, notes)
