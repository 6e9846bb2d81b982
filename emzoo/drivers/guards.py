"""What the file driver checks so that a run loses nothing, writes no garbage and fails early.

Once per run, after the model loads and before any file is read (:func:`check_run`, usage errors):
the ``tile`` sizes against the model's size rules (:class:`emzoo.package.spec.SizeRule`), and the
output ``format`` against the dtypes of the model's outputs.

Per input (failures of that input only):

* **Own outputs are no inputs** (:func:`own_outputs`): an input inside the output folder that carries
  emzoo's mark (:func:`emzoo.io.write.written_by_emzoo`: the TIFF ``Software`` tag, an MRC label, an
  OME-Zarr attribute, a PNG text chunk, a sidecar for ``.npy``) was written by an earlier run into
  its own input folder: it is left out with a note instead of being predicted again (``a_prob_prob``).
* **Inputs are never overwritten** and nothing is written outside the output folder
  (:func:`check_outputs`): an output path that is one of the run's inputs, or that leaves the output
  folder (a tensor id such as ``../x``), fails its input before anything is computed.
* **No silent garbage** (:func:`check_finite`): a float image with NaN or ±Inf pixels is refused
  (the model would predict NaN).
* **No allocation beyond memory** (:func:`check_in_memory`): an in-memory prediction that needs more
  than the memory available is refused before it starts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from emzoo.drivers.options import RunOptions
from emzoo.drivers.outputs import is_value_table
from emzoo.errors import InputError, UsageError
from emzoo.io import Image, InputFile
from emzoo.io.limits import check_memory
from emzoo.io.write import check_writable, written_by_emzoo
from emzoo.package.spec import ModelSpec
from emzoo.runtime.planning import GridAxis, accepted_tile, axis_rule
from emzoo.runtime.settings import TileSettings

_SLAB_BYTES = 64 * 2**20  # finiteness is checked in slabs of about this size (lazy inputs stay lazy)


def check_tile(spec: ModelSpec, settings: TileSettings) -> None:
    """``tile``: one size, or one per spatial axis of the model, each one the model accepts."""
    if settings.tile is None:
        return
    first = spec.inputs[0]
    axes = first.spatial_axes
    if len(settings.tile) not in (1, len(axes)):
        raise UsageError(f"{{tile}} takes 1 or {len(axes)} sizes for this model, got {len(settings.tile)}")
    sizes = list(settings.tile) * (len(axes) if len(settings.tile) == 1 else 1)
    for axis, n in zip(axes, sizes, strict=True):
        accepted_tile(GridAxis(axis.id, int(n), axis_rule(spec, first, axis), ()), int(n))


def check_output_format(spec: ModelSpec, fmt: str | None) -> None:
    """An explicitly chosen output ``format`` must hold the dtype of every image output."""
    if fmt is None:
        return
    for tensor in spec.outputs:
        if not is_value_table(tensor):
            check_writable(fmt, tensor.dtype, f"the model's output {tensor.id!r}")


def check_run(spec: ModelSpec, settings: TileSettings, options: RunOptions) -> None:
    """The checks of a run that need the model but no input (usage errors, before any file is read)."""
    check_tile(spec, settings)
    check_output_format(spec, options.output.format)


def _absolute(path: Path) -> Path:
    return Path(os.path.normpath(os.path.abspath(path)))


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return _absolute(path)


def _inside(path: Path, root: Path) -> bool:
    return _resolved(path).is_relative_to(root)


def own_outputs(
    samples: Sequence[Mapping[str, InputFile]], out_dir: Path
) -> tuple[list[Mapping[str, InputFile]], list[Path]]:
    """``(samples to predict, inputs left out)``: samples with an input inside ``out_dir`` that emzoo
    wrote (an output of an earlier run) are left out."""
    root = _resolved(out_dir)
    kept, left_out = [], []
    for sample in samples:
        ours = [f.path for f in sample.values() if _inside(f.path, root) and written_by_emzoo(f.path)]
        if ours:
            left_out.extend(ours)
        else:
            kept.append(sample)
    return kept, left_out


def input_set(samples: Iterable[Mapping[str, InputFile]]) -> set[Path]:
    """Every input of a run, resolved (outputs must never replace one)."""
    return {_resolved(f.path) for sample in samples for f in sample.values()}


def check_outputs(paths: Iterable[Path], inputs: set[Path], out_dir: Path) -> None:
    """Refuse output paths outside ``out_dir`` or onto an input of the run (before any work)."""
    root = _absolute(out_dir)
    for path in paths:
        if not _absolute(path).is_relative_to(root) or path.name in ("", ".", ".."):
            raise InputError(f"the output path {path} would be outside the output folder {out_dir}: refused")
        if _resolved(path) in inputs:
            raise InputError(
                f"its output {path} would replace an input of this run: write the outputs to another "
                "folder ({out_dir}) or rename that input"
            )


def check_finite(path: Path, image: Image) -> None:
    """Refuse a float image with NaN or ±Inf pixels (read in slabs: lazy inputs stay lazy)."""
    data = image.data
    dtype = np.dtype(data.dtype)
    if dtype.kind not in "fc" or not data.shape:
        return
    shape = tuple(int(n) for n in data.shape)
    step = max(1, _SLAB_BYTES // max(1, math.prod(shape[1:]) * dtype.itemsize))
    bad = 0
    for start in range(0, shape[0], step):
        bad += int(np.count_nonzero(~np.isfinite(np.asarray(data[start : start + step]))))
    if bad:
        total = math.prod(shape)
        what = "all" if bad == total else f"{bad} of {total}"
        raise InputError(
            f"{path}: {what} pixels are NaN or ±Inf: the model would predict NaN; replace them "
            "(e.g. with the image's mean) first"
        )


def check_in_memory(spec: ModelSpec, path: Path, image: Image) -> None:
    """Refuse an in-memory prediction that needs more than the memory available: a float32 copy of
    the input and the float32 outputs (per input pixel and output channel), before anything is
    allocated."""
    pixels = math.prod(int(n) for n in image.shape)
    channels = sum(t.n_channels or 1 for t in spec.outputs if not is_value_table(t))
    needed = pixels * 4 * (1 + channels)
    check_memory(
        f"{path}: predicting it in memory",
        needed,
        "predict it out of core ({stream=True}) or on a machine with more memory",
    )
