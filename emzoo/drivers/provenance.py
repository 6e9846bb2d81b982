"""The provenance record of a prediction: which model made an output, from which input, how it ran,
with which normalisation statistics, whether the input looked unlike the training data, and when.

**One record per input**, ``<first output stem>.provenance.json`` beside its outputs (``a.tif`` ->
``a_prob.tif`` and ``a_prob.provenance.json``), listing every file it covers (``files``: each output
tensor, the output kind's extras such as counting CSVs, previews). An OME-Zarr output also holds it
in its group attributes (``attrs["emzoo"]["provenance"]``), so that it travels with the store.

**Contents** (:data:`RECORD_VERSION` 1): ``model`` (name, id, version, the sha256 of the package zip
or, for a folder package, of its ``rdf.yaml``; weight format and that weights file's sha256),
``input`` (path, sha256, shape, axes, pixel size and unit; ``more_inputs`` for models with several),
``runtime`` (backend, device and providers, precision, test-time augmentation, the tiling that ran:
``tile``/``halo``/``blend`` per tiled axis, ``batch``, ``tiles``; ``tile`` null: one call on the
whole image; what was ``requested``; the chunks of an out-of-core run; ``rescale``), ``processing``
(the statistics the normalisation used, per tensor and op: percentiles, mean, std...), ``ood``
(:func:`ood_section`), ``versions`` and ``started``/``finished`` (ISO 8601, UTC).

**Hashes** (:mod:`emzoo.drivers.digests`). A file input is hashed whole (in chunks; above 4 GiB by its
size, first and last 16 MiB); a folder by its metadata only: a Zarr store's ``.zgroup``/``.zarray``/
``.zattrs``/``zarr.json`` files (not its chunks), a folder of slices by the names and sizes of its
files. ``input.sha256_of`` says which.

**Nothing lost under faults.** The record is written (atomically, :mod:`emzoo.atomic`) after every
file it lists; a run that replaces outputs removes the old record before the first of them is
replaced. So a record always describes files that exist and were written by the run it describes.
A run killed between the last output and its record leaves outputs without a record: the file
driver takes them for incomplete and predicts that input again (:func:`todo`); a record whose files
are gone is removed there. An OME-Zarr store that holds its record in its attributes gets its
sidecar back without predicting again.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emzoo.atomic import write_text_atomic
from emzoo.drivers.digests import input_digest, package_file_sha256
from emzoo.drivers.outputs import stem
from emzoo.errors import InputError
from emzoo.version import __version__

if TYPE_CHECKING:
    from emzoo.drivers.options import RunOptions
    from emzoo.io.meta import Image
    from emzoo.package.spec import ModelSpec
    from emzoo.runtime.predictor import Predictor

RECORD_SUFFIX = ".provenance.json"
RECORD_VERSION = 1
_BACKENDS = {"onnx": "onnxruntime", "torchscript": "torch", "pytorch_state_dict": "torch"}
# the statistics an op holds, in the order emzoo.runtime.processing keeps them
_VALUE_NAMES = {
    "zero_mean_unit_variance": ("mean", "std"),
    "scale_mean_variance": ("mean", "std", "reference_mean", "reference_std"),
    "scale_range": ("lower", "upper"),
}


def record_path(first_output: Path) -> Path:
    """``<output stem>.provenance.json`` beside the first output of an input."""
    first_output = Path(first_output)
    return first_output.with_name(stem(first_output) + RECORD_SUFFIX)


def now() -> str:
    """The time, ISO 8601 in UTC (``2025-01-31T12:00:00.123Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ----------------------------------------------------------------------------------------- sections


def model_section(predictor: Predictor) -> dict[str, Any]:
    """Which package and weights: names, versions, sha256 (computed once per run)."""
    package, spec, weights = predictor.package, predictor.spec, predictor.weights
    source = Path(package.source)
    zipped = source.is_file() and zipfile.is_zipfile(source)
    hashed = source if zipped else package.rdf
    weights_sha = weights.sha256 or package_file_sha256(package.file(weights.source))
    return {
        "name": spec.name,
        "id": spec.id,
        "version": spec.version,
        "source": str(source.resolve()) if source.exists() else str(source),
        "sha256": package_file_sha256(hashed),
        "sha256_of": "the package zip" if zipped else f"its {package.rdf.name}",
        "format_version": spec.format_version,
        "weights": {"format": weights.format, "source": weights.source, "sha256": weights_sha},
        "trusted_code": package.trust_code,
    }


def input_section(tensor_id: str, path: Path | None, image: Image) -> dict[str, Any]:
    """One input as read: its file (hashed), shape, axes, dtype and calibration."""
    meta = image.meta
    section: dict[str, Any] = {"id": tensor_id, "path": None, "sha256": None}
    if path is not None and Path(path).exists():
        section["path"] = str(Path(path).resolve())
        section.update(input_digest(Path(path)))
    return {
        **section,
        "format": meta.format or None,
        "shape": list(image.shape),
        "axes": meta.axes,
        "dtype": str(np.dtype(image.data.dtype)),
        "pixel_size": {a: float(v) for a, v in meta.pixel_size.items()} or None,
        "unit": meta.unit,
    }


def _option(options: RunOptions | None, name: str) -> Any:
    """An option by name in any of the run's records (None when this emzoo has no such option)."""
    for record in (options, *(getattr(options, k, None) for k in ("inputs", "output", "stream"))):
        value = getattr(record, name, None)
        if value is not None:
            return value
    return None


def runtime_section(predictor: Predictor, options: RunOptions | None) -> dict[str, Any]:
    """How the model runs and what was asked (the tiling that ran comes with :func:`note_run`)."""
    backend = predictor.backend
    session = getattr(backend, "session", None)
    providers = session.get_providers() if hasattr(session, "get_providers") else None
    settings = predictor.settings
    return {
        "backend": _BACKENDS.get(predictor.weights.format, predictor.weights.format),
        "weight_format": predictor.weights.format,
        "device": predictor.device,
        "providers": list(providers) if providers else None,
        "precision": predictor.precision.precision,
        "tta": predictor.tta,
        "tile": None,
        "halo": None,
        "blend": None,
        "batch": None,
        "tiles": None,
        "requested": {
            "device": str(predictor.requested_device),
            "tile": list(settings.tile) if settings.tile else None,
            "halo": settings.halo,
            "blend": settings.blend,
            "batch_size": settings.batch_size,
            "tta": settings.tta,
        },
        "slices": bool(_option(options, "slices")),
        "stack": bool(_option(options, "stack")),
        "stream": None,
        "rescale": _option(options, "rescale"),
        "pixel_size_given": _text(_option(options, "pixel_size")),
    }


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def tiling(predictor: Predictor) -> dict[str, Any]:
    """The tiling of the predictor's last run (``tile`` None: the whole image in one call)."""
    plan = predictor.last_plan
    if plan is None:
        return {"tile": None, "halo": None, "blend": None, "batch": 1, "tiles": 1}
    return {
        "tile": [a.block for a in plan.axes],
        "halo": [a.halo for a in plan.axes],
        "blend": [a.blend for a in plan.axes],
        "batch": plan.batch_size,
        "tiles": plan.n_tiles,
    }


def _number(value) -> Any:
    """A statistic as JSON: a float, or nested lists of them (one per channel...); NaN as null."""
    arr = np.asarray(value, dtype=np.float64).squeeze()
    if arr.ndim == 0:
        return float(arr) if np.isfinite(arr) else None
    return [_number(v) for v in arr]


def _value_names(op, n: int) -> tuple[str, ...]:
    if op.id == "clip":
        return tuple(k for k in ("min", "max") if op.kwargs.get(f"{k}_percentile") is not None)
    return _VALUE_NAMES.get(op.id, tuple(f"v{i}" for i in range(n)))


def statistics_section(spec: ModelSpec, stats: Mapping[str, Mapping[str, Sequence]]) -> dict[str, list]:
    """``{tensor id: [{"op", "kwargs", "values"}]}`` from the statistics memos of
    :meth:`Predictor.run` (``{tensor id: {"<op position>:<op id>": values}}``)."""
    out: dict[str, list] = {}
    for tid, memo in stats.items():
        ops = spec.tensor(tid).processing
        entries = []
        for key, values in memo.items():
            op = ops[int(key.partition(":")[0])]
            shown = dict(zip(_value_names(op, len(values)), map(_number, values), strict=True))
            entries.append({"op": op.id, "kwargs": dict(op.kwargs), "values": shown})
        if entries:
            out[tid] = entries
    return out


def processing_section(per_sample: Sequence[dict | None] | dict | None) -> dict[str, Any]:
    """The statistics of the whole image (one :func:`statistics_section`), or of each z slice (a list
    of them in z order: each value becomes a list over the slices, null where one is unknown)."""
    if isinstance(per_sample, dict):
        return {"statistics_of": "the whole image", "tensors": per_sample}
    slices = list(per_sample or [])
    template = next((s for s in slices if s is not None), None)
    if template is None:  # not known (e.g. the chunks of a run by an emzoo before records)
        return {"statistics_of": None, "tensors": None}
    merged = {
        tid: [
            {**op, "values": {name: [_slice_value(s, tid, i, name) for s in slices] for name in op["values"]}}
            for i, op in enumerate(ops)
        ]
        for tid, ops in template.items()
    }
    return {"statistics_of": "each z slice", "slices": len(slices), "tensors": merged}


def _slice_value(stats: dict | None, tid: str, index: int, name: str) -> Any:
    try:
        return stats[tid][index]["values"][name]  # type: ignore[index]
    except (TypeError, KeyError, IndexError):
        return None


def ood_section(spec: ModelSpec, image: Image) -> dict[str, Any]:
    """Is the input unlike the training data? ``{score, threshold, out_of_distribution, reasons}``
    of :func:`emzoo.tasks.ood.assess`, judged on the image before the model runs (the file driver
    records its own verdict, with the outputs' features too)."""
    from emzoo.tasks.ood import assess

    with np.errstate(all="ignore"):
        return assess(spec, image).record()


def versions() -> dict[str, str]:
    """emzoo, Python, numpy; onnxruntime and torch when loaded; bioimageio.spec/core when installed."""
    found = {"emzoo": __version__, "python": platform.python_version(), "numpy": np.__version__}
    names = [m for m in ("onnxruntime", "torch") if m in sys.modules] + ["bioimageio.spec", "bioimageio.core"]
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def begin(
    predictor: Predictor,
    images: Mapping[str, Image],
    sources: Mapping[str, Path | None],
    *,
    options: RunOptions | None = None,
    ood: Mapping[str, Any] | None = None,
    started: str | None = None,
) -> dict[str, Any]:
    """The record of one input as far as it is known before predicting: model, inputs (hashed),
    runtime as asked, out-of-distribution verdict (``ood``: a verdict's record, see
    :func:`ood_section`; None: judged here), versions, start."""
    if ood is None:
        ood = ood_section(predictor.spec, next(iter(images.values())))
    sections = [input_section(tid, sources.get(tid), image) for tid, image in images.items()]
    record: dict[str, Any] = {
        "record_version": RECORD_VERSION,
        "files": [],
        "model": model_section(predictor),
        "input": sections[0],
    }
    if len(sections) > 1:
        record["more_inputs"] = sections[1:]
    record.update(
        runtime=runtime_section(predictor, options),
        processing=processing_section(None),
        ood=dict(ood),
        versions=versions(),
        started=started or now(),
        finished=None,
        seconds=None,
    )
    return record


def note_run(record: dict[str, Any], predictor: Predictor, per_sample: Sequence[dict] | dict | None) -> None:
    """Add what the predictor's last run used: its tiling and the normalisation statistics."""
    record["runtime"].update(tiling(predictor))
    record["processing"] = processing_section(per_sample)


def _relative(path: Path, folder: Path) -> str:
    return Path(os.path.relpath(path, folder)).as_posix()


def complete(record: Mapping[str, Any], files: Iterable[Path], folder: Path) -> dict[str, Any]:
    """The record with the ``files`` it covers (relative to ``folder``, the record's) and its end."""
    done = dict(record)
    done["files"] = sorted({_relative(Path(p), folder) for p in files})
    done["finished"] = now()
    with contextlib.suppress(ValueError, TypeError):
        start = datetime.fromisoformat(str(done["started"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(done["finished"].replace("Z", "+00:00"))
        done["seconds"] = round((end - start).total_seconds(), 3)
    return done


# -------------------------------------------------------------------------------- files and stores


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON: numpy numbers and arrays as numbers and lists, NaN and ±Inf as null,
    paths and anything else as text (a detail of the record never fails a prediction)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray | np.generic):
        return jsonable(value.tolist())
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def write(record: Mapping[str, Any], path: Path) -> Path:
    """Write the record atomically (after every file it lists)."""
    return write_text_atomic(path, json.dumps(jsonable(record), indent=1, allow_nan=False) + "\n")


def put_in_store(store: Path, record: Mapping[str, Any]) -> None:
    """Put the record in an OME-Zarr store's group attributes (``emzoo.provenance``), atomically."""
    for name, key in ((".zattrs", None), ("zarr.json", "attributes")):
        path = Path(store) / name
        if not path.is_file():
            continue
        content = json.loads(path.read_text(encoding="utf-8"))
        attrs = content if key is None else content.setdefault(key, {})
        mark = attrs.get("emzoo") if isinstance(attrs.get("emzoo"), dict) else {}
        attrs["emzoo"] = {**mark, "provenance": jsonable(record)}
        write_text_atomic(path, json.dumps(content, indent=1, allow_nan=False))
        return


def from_store(store: Path) -> dict[str, Any] | None:
    """The record in an OME-Zarr store's group attributes, or None."""
    for name, key in ((".zattrs", None), ("zarr.json", "attributes")):
        try:
            content = json.loads((Path(store) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        attrs = content if key is None else content.get(key, {})
        found = (attrs.get("emzoo") or {}).get("provenance") if isinstance(attrs, dict) else None
        return found if _is_record(found) else None
    return None


def _is_record(content: Any) -> bool:
    return (
        isinstance(content, dict) and "record_version" in content and isinstance(content.get("files"), list)
    )


def read(path: Path) -> dict[str, Any]:
    """A record file read back; :class:`InputError` when it is not one."""
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable provenance record ({e})") from e
    if not _is_record(content):
        raise InputError(f"{path}: not a provenance record (no record_version and files)")
    return content


def retract(path: Path) -> None:
    """Remove an input's record before the first of its outputs is replaced."""
    Path(path).unlink(missing_ok=True)


def covered(path: Path, first_output: Path) -> set[Path]:
    """The files that the input's record covers, all of which exist; empty when there is no valid
    record. A record that lists a missing file is removed (its outputs are incomplete); a missing
    record is restored from an OME-Zarr first output that holds it (the run ended between them)."""
    path = Path(path)
    try:
        record = read(path)
    except InputError:
        record = from_store(first_output) if Path(first_output).is_dir() else None
        if record is None:
            return set()
        if all((path.parent / f).exists() for f in record["files"]):
            write(record, path)
    files = {path.parent / f for f in record["files"]}
    if not all(f.exists() for f in files):
        retract(path)
        return set()
    return files


def todo(
    wanted: Mapping[str, Path],
    path: Path,
    first_output: Path,
    *,
    overwrite: bool = False,
    derived: Iterable[str] = (),
) -> dict[str, Path]:
    """Which of one input's outputs (key -> path) to write: none when all exist and its record covers
    them; only the missing ``derived`` ones (previews, drawn from the outputs) when the rest is
    covered; else all of them (an output without its record is incomplete)."""
    if overwrite:
        return dict(wanted)
    files = covered(path, first_output)
    missing = {k: p for k, p in wanted.items() if Path(p) not in files}
    if not missing or (files and set(missing) <= set(derived)):
        return missing
    return dict(wanted)


def add_files(path: Path, files: Iterable[Path]) -> None:
    """List more files (previews drawn later) in an input's record, atomically."""
    files = [Path(f) for f in files]
    if not files:
        return
    record = read(path)
    names = {*record["files"], *(_relative(f, path.parent) for f in files if f.exists())}
    write({**record, "files": sorted(names)}, path)


def find(target: Path) -> tuple[Path | None, dict[str, Any]] | None:
    """The record of an output (or the record file itself): ``(record file, record)``; the file is
    None for a record read from an OME-Zarr store. None when there is none."""
    target = Path(target)
    if target.name.endswith(RECORD_SUFFIX):
        return target, read(target)
    own = record_path(target)
    if own.is_file():
        return own, read(own)
    if target.parent.is_dir():
        for candidate in sorted(target.parent.glob("*" + RECORD_SUFFIX)):
            with contextlib.suppress(InputError):
                record = read(candidate)
                if target.name in record["files"]:
                    return candidate, record
    if target.is_dir():
        record = from_store(target)
        if record is not None:
            return None, record
    return None
