"""Where the outputs of a run go and how one output tensor is written: names, formats, value tables,
previews.

With ``preview``, every float image output gets an 8-bit ``<output stem>.preview.png`` beside it
(:func:`emzoo.io.preview.preview_pixels`: probabilities linear, other images stretched between their
0.5 and 99.5 percentiles, a volume's middle slice, channels in a grid; at most
:data:`PREVIEW_MAX_SIDE` px a side). PNG outputs of float tensors are the same picture, full size.

>>> output_format_for("mrc", None), output_format_for("png", None), output_format_for("mrc", "tiff")
('mrc', 'tiff', 'tiff')
>>> preview_path(Path("out/a_prob.ome.zarr"))
PosixPath('out/a_prob.preview.png')
"""

from __future__ import annotations

import csv
import io as _io
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emzoo.atomic import write_text_atomic
from emzoo.drivers.kinds import output_kind
from emzoo.drivers.options import OutputOptions
from emzoo.errors import PackageError, UsageError, literal
from emzoo.io import Image, InputFile, read_image, write_image
from emzoo.io.lookup import get_writer
from emzoo.io.preview import preview_pixels
from emzoo.io.write import writable_dtype, written_by_emzoo
from emzoo.package.spec import ModelSpec, TensorSpec

# the default output format follows the input where emzoo can write that format
_FOLLOW_INPUT = {"mrc": "mrc", "ome-zarr": "ome-zarr", "zarr": "ome-zarr"}
_KNOWN_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr")
PREVIEW_SUFFIX = ".preview.png"
PREVIEW_MAX_SIDE = 8192  # larger previews keep every n-th pixel
_PREVIEW_KEY = ":preview"  # "<output id>:preview" (ids never hold a colon: _file_part)
_DRAWING_KINDS = ("counting",)  # output kinds that draw their results with {overlay}
_PROBABILITY_OPS = ("sigmoid", "softmax")


def stem(path: Path) -> str:
    """The file name without its suffix (also double suffixes such as ``.ome.tif``)."""
    name = path.name
    for suffix in _KNOWN_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def output_format_for(image_format: str, requested: str | None) -> str:
    return requested or _FOLLOW_INPUT.get(image_format, "tiff")


def output_stems(items: Sequence[InputFile]) -> dict[Path, str]:
    """``<relative folder>/<stem>`` per input; inputs that would share one (a.png, a.tif) keep their
    suffix in it (``a_png``, ``a_tif``); those that still share one (x/a.tif and y/a.tif given as two
    arguments) are numbered in the order given (``a_tif``, ``a_tif_2``).

    >>> files = [InputFile(Path(p), Path(Path(p).name)) for p in ("x/a.tif", "y/a.tif", "a.png")]
    >>> list(output_stems(files).values())
    ['a_tif', 'a_tif_2', 'a_png']
    """
    plain = {f.path: str(f.relative.parent / stem(f.path)) for f in items}
    counts: dict[str, int] = {}
    for name in plain.values():
        counts[name] = counts.get(name, 0) + 1
    named = {
        f.path: plain[f.path]
        if counts[plain[f.path]] == 1
        else plain[f.path] + "_" + f.path.suffix.lstrip(".")
        for f in items
    }
    taken = set(named.values())
    seen: dict[str, int] = {}
    for f in items:
        name = named[f.path]
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            k = seen[name]
            while f"{name}_{k}" in taken:
                k += 1
            named[f.path] = f"{name}_{k}"
            taken.add(named[f.path])
    return named


def is_value_table(tensor: TensorSpec) -> bool:
    """Outputs without spatial axes (class scores, a count) are written as one-row CSV tables."""
    return not any(a.is_spatial for a in tensor.axes)


def _file_part(tensor_id: str) -> str:
    """A tensor id as part of a file name: no path separators, no dots alone, no control characters
    (a package's ids must not steer outputs out of the output folder)."""
    if (
        not tensor_id
        or tensor_id in (".", "..")
        or any(c in tensor_id for c in "/\\:")
        or any(ord(c) < 32 for c in tensor_id)
    ):
        raise PackageError(
            f"the package names an output {tensor_id!r}, which cannot be part of a file name "
            "(path separators, dots or control characters): refusing to write it"
        )
    return tensor_id


def output_paths(spec: ModelSpec, base: Path, fmt: str) -> dict[str, Path]:
    """One path per output tensor: ``<base>_<output id><suffix>`` (``base``: OUT/<folder>/<stem>)."""
    paths = {}
    for t in spec.outputs:
        suffix = ".csv" if is_value_table(t) else get_writer(fmt).suffix
        paths[t.id] = base.with_name(f"{base.name}_{_file_part(t.id)}{suffix}")
    return paths


def _channel_names(tensor: TensorSpec) -> tuple[str, ...]:
    return next((a.channel_names for a in tensor.axes if a.type == "channel"), ())


def write_value_table(path: Path, image: Image, channel_names: Sequence[str]) -> Path:
    values = np.asarray(image.data).reshape(-1)
    names = (
        list(channel_names) if len(channel_names) == values.size else [f"v{i}" for i in range(values.size)]
    )
    buf = _io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(names)
    writer.writerow([f"{v:.6g}" for v in values])
    return write_text_atomic(path, buf.getvalue())


def is_probability(tensor: TensorSpec) -> bool:
    """Does the output's post-processing end in a sigmoid or softmax (a dtype cast after it aside)?"""
    ops = [op.id for op in tensor.processing if op.id != "ensure_dtype"]
    return bool(ops) and ops[-1] in _PROBABILITY_OPS


def write_output(path: Path, tensor: TensorSpec, image: Image, fmt: str) -> Path:
    """Write one output tensor: a value table (``.csv``) or an image in ``fmt``, atomically (a store
    emzoo wrote at ``path`` before, which a rename cannot replace, is removed once the data are ready;
    any other folder there fails the write)."""
    if path.suffix == ".csv":
        return write_value_table(path, image, _channel_names(tensor))
    data = np.asarray(image.data)
    data = data.astype(writable_dtype(data.dtype), copy=False)
    if path.is_dir() and not path.is_symlink() and written_by_emzoo(path):
        shutil.rmtree(path)
    return write_image(path, data, image.meta, format=fmt, probability=is_probability(tensor) or None)


def check_output_options(spec: ModelSpec, output: OutputOptions) -> None:
    """The output options that need the model (usage errors, before any file is read)."""
    kind = output_kind(spec)
    if output.overlay and kind.name not in _DRAWING_KINDS:
        raise UsageError(
            f"{{overlay}} draws detected particles; {literal(spec.name)} is not a counting model"
        )


def preview_path(output: Path) -> Path:
    """``<output stem>.preview.png`` beside an output."""
    return output.with_name(stem(output) + PREVIEW_SUFFIX)


def preview_paths(spec: ModelSpec, paths: dict[str, Path]) -> dict[str, Path]:
    """``{"<output id>:preview": path}`` for the float image outputs among ``paths`` (output id ->
    path), to be planned, skipped and overwritten like the outputs."""
    return {
        tid + _PREVIEW_KEY: preview_path(path)
        for tid, path in paths.items()
        if not is_value_table(spec.output(tid)) and np.dtype(spec.output(tid).dtype).kind == "f"
    }


def write_previews(
    spec: ModelSpec, todo: dict[str, Path], results: dict[str, Image] | None, outputs: dict[str, Path]
) -> list[Path]:
    """Write the previews among ``todo`` (keys of :func:`preview_paths`), from the ``results`` in
    memory or, without them, from the written ``outputs`` (read back lazily: a streamed output)."""
    written = []
    for key, path in todo.items():
        if not key.endswith(_PREVIEW_KEY):
            continue
        tid = key[: -len(_PREVIEW_KEY)]
        image = results[tid] if results is not None else read_image(outputs[tid])
        if image.meta.format == "png":  # an output written as a picture already (emzoo.io.write)
            written.append(write_image(path, np.asarray(image.data), image.meta, format="png"))
            continue
        probability = is_probability(spec.output(tid)) or None
        pixels = preview_pixels(
            image.data, image.meta.axes, probability=probability, max_side=PREVIEW_MAX_SIDE
        )
        written.append(write_image(path, pixels, image.meta.with_axes("yx"), format="png"))
    return written
