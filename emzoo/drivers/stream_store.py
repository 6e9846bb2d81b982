"""The output side of out-of-core prediction (:mod:`emzoo.drivers.streaming`): partial OME-Zarr
stores under hidden names, the record of finished chunks inside them, and their completion.

A store is written as ``.NAME.partial`` (``.NAME.ome.zarr.partial`` when the final output is MRC, TIFF
or ``.npy``). The first store holds ``.emzoo-stream/run.json`` (what the run computes: a re-run with
other settings refuses to mix its chunks in) and ``.emzoo-stream/done/<chunk>``, one small JSON file
per finished chunk, written atomically after all of the chunk's outputs are stored, by whichever
process (or cluster worker) computed it, after the sample's normalisation statistics
(``.emzoo-stream/statistics/<sample>``, for the provenance record, also of a resumed run). :func:`finish`
publishes the OME-NGFF metadata only when every chunk is recorded, drops the stream's record, puts the
provenance record (:mod:`emzoo.drivers.provenance`) in the OME-Zarr stores' attributes, renames (or
converts) the stores and writes the provenance record beside them, last.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emzoo.atomic import write_text_atomic
from emzoo.drivers import provenance
from emzoo.errors import InputError

if TYPE_CHECKING:
    from emzoo.drivers.chunks import Job, StreamPlan
    from emzoo.io.meta import Image
    from emzoo.runtime.predictor import Predictor

RECORD = ".emzoo-stream"
RECORD_VERSION = 1


def header(predictor: Predictor, image: Image, plan: StreamPlan, fmt: str) -> dict:
    """What a run computes; a resumed run must match it exactly."""
    weights = predictor.weights
    wanted = {
        "version": RECORD_VERSION,
        "model": predictor.spec.name,
        "weights": weights.sha256 or weights.source,
        "weight_format": weights.format,
        # tta as it runs (the package's default when not asked for), batch size as it likes
        "settings": {
            **{k: v for k, v in asdict(predictor.settings).items() if k != "batch_size"},
            "tta": predictor.tta,
        },
        "input": str(Path(image.meta.source).resolve()) if image.meta.source else None,
        "input_shape": list(plan.image_shape),
        "slices": plan.sample_axis is not None,
        "chunk": list(plan.chunk),
        "context": list(plan.context),
        "output_format": fmt,
        "outputs": {o.id: {"axes": o.axes, "shape": list(o.shape), "dtype": o.dtype} for o in plan.outputs},
    }
    return json.loads(json.dumps(wanted))  # as it reads back (tuples become lists)


def partial_path(final: Path, fmt: str) -> Path:
    """The hidden name a store is written under until it is complete (fixed, so a re-run finds it)."""
    suffix = ".partial" if fmt == "ome-zarr" else ".ome.zarr.partial"
    return final.with_name(f".{final.name}{suffix}")


@dataclass(frozen=True)
class Stores:
    """The partial output stores of one streamed prediction and their record (plain paths, so that
    cluster workers can write into them)."""

    paths: dict[str, str]  # output id -> partial store
    record: str

    def array(self, output_id: str):
        import zarr

        return zarr.open_array(store=str(Path(self.paths[output_id]) / "0"), mode="r+", zarr_format=2)

    def done(self) -> set[str]:
        folder = Path(self.record) / "done"
        if not folder.is_dir():
            return set()
        return {p.name for p in folder.iterdir() if not p.name.startswith(".")}

    def write(self, plan: StreamPlan, job: Job, blocks: Mapping[str, np.ndarray]) -> None:
        for out in plan.outputs:
            self.array(out.id)[plan.output_region(out, job)] = blocks[out.id]

    def discard(self) -> None:
        """Remove the partial stores (when not one chunk is done: nothing to resume)."""
        for path in self.paths.values():
            shutil.rmtree(path, ignore_errors=True)

    def keep_statistics(self, sample: int | None, statistics: dict) -> None:
        """Keep a sample's normalisation statistics (:func:`provenance.statistics_section`) for the
        provenance record, once, before its first chunk is marked done."""
        path = Path(self.record) / "statistics" / _sample_name(sample)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(statistics))

    def statistics(self, plan: StreamPlan) -> dict | list | None:
        """The kept statistics: of the whole image, or a list per z sample (None where missing)."""
        folder = Path(self.record) / "statistics"
        found = [_read_json(folder / _sample_name(s)) for s in _samples(plan)]
        return found[0] if plan.sample_axis is None else found

    def mark_done(self, job: Job, seconds: float) -> None:
        """Record a finished chunk (after all its outputs are written), atomically."""
        folder = Path(self.record) / "done"
        folder.mkdir(parents=True, exist_ok=True)
        info = {"seconds": round(seconds, 3), "host": socket.gethostname(), "pid": os.getpid()}
        write_text_atomic(folder / job.name, json.dumps(info))


def _sample_name(sample: int | None) -> str:
    return "image" if sample is None else str(sample)


def _samples(plan: StreamPlan) -> list[int | None]:
    return [None] if plan.sample_axis is None else list(range(plan.n_samples))


def open_stores(
    plan: StreamPlan, finals: Mapping[str, Path], fmt: str, run_header: dict, *, overwrite: bool = False
) -> Stores:
    """Create the partial stores, or reopen those of an interrupted run with the same header."""
    from emzoo.io.formats.zarr_store import create_ome_zarr

    partials = {o.id: partial_path(Path(finals[o.id]), fmt) for o in plan.outputs}
    first = partials[plan.outputs[0].id]
    record = first / RECORD
    stores = Stores({k: str(v) for k, v in partials.items()}, str(record))
    if overwrite:
        for p in partials.values():
            shutil.rmtree(p, ignore_errors=True)
    existing = [p for p in partials.values() if p.exists()]
    if existing:
        found = _read_json(record / "run.json")
        if found is not None and found == run_header and len(existing) == len(partials):
            return stores
        if not (record / "run.json").exists():
            # a run ended while creating them (before any chunk) or while publishing them (after the
            # record was dropped): no chunk is recorded to keep, start again
            for p in existing:
                shutil.rmtree(p, ignore_errors=True)
        else:
            what = "was started with other settings" if found is not None else "has no readable record"
            raise InputError(
                f"{first}: an unfinished output of an earlier run that {what} "
                f"({_difference(found, run_header)}): remove it, or pass {{overwrite=True}} to start again"
            )
    for out in plan.outputs:
        final = Path(finals[out.id])
        final.parent.mkdir(parents=True, exist_ok=True)
        create_ome_zarr(partials[out.id], out.shape, out.dtype, out.meta, out.store_chunks, name=final.name)
    record.mkdir(parents=True, exist_ok=True)
    write_text_atomic(record / "run.json", json.dumps(run_header, indent=1))
    return stores


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _difference(found: dict | None, wanted: dict) -> str:
    if found is None:
        return "no .emzoo-stream/run.json"
    keys = [k for k in wanted if found.get(k) != wanted[k]]
    return ", ".join(f"{k}: {found.get(k)} there, {wanted[k]} now" for k in keys[:3]) or "other outputs"


def finish(plan: StreamPlan, stores: Stores, finals: Mapping[str, Path], fmt: str, record: dict) -> Path:
    """Publish complete stores: finalise, drop the stream's record, rename (or convert to ``fmt``),
    then write the provenance ``record`` (completed here) beside them; returns its path."""
    from emzoo.io.formats.zarr_store import finalize_ome_zarr
    from emzoo.io.write import write_image

    missing = {j.name for j in plan.jobs()} - stores.done()
    if missing:
        raise InputError(f"{len(missing)} chunk(s) are not done yet (e.g. {sorted(missing)[0]})")
    for out in plan.outputs:
        finalize_ome_zarr(stores.paths[out.id])
    record = {**record, "processing": provenance.processing_section(stores.statistics(plan))}
    outputs = [Path(finals[o.id]) for o in plan.outputs]
    record_path = provenance.record_path(outputs[0])
    done = provenance.complete(record, outputs, record_path.parent)
    if fmt == "ome-zarr":  # inside the stores: renamed with them
        for out in plan.outputs:
            provenance.put_in_store(Path(stores.paths[out.id]), done)
    shutil.rmtree(stores.record, ignore_errors=True)
    provenance.retract(record_path)  # before the first output is replaced
    for out in plan.outputs:
        partial, final = Path(stores.paths[out.id]), Path(finals[out.id])
        if fmt == "ome-zarr":
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
            os.replace(partial, final)
            continue
        array = stores.array(out.id)
        if out.axes not in ("yx", "zyx") and fmt == "mrc":
            raise InputError(
                f"output {out.id!r} has axes {out.axes!r}; MRC holds yx or zyx: use "
                "{output_format=tiff} or ome-zarr"
            )
        write_image(final, array, replace(out.meta, format=fmt), format=fmt)
        shutil.rmtree(partial, ignore_errors=True)
    if fmt != "ome-zarr":  # converted: finished now
        done = provenance.complete(record, outputs, record_path.parent)
    return provenance.write(done, record_path)
