"""Chunked prediction on a dask.distributed cluster: the chunks of :mod:`emzoo.drivers.streaming`,
one task each, run by the workers, which write straight into the output store.

The scheduler's address is all emzoo needs (``emzoo predict ... --dask tcp://host:8786``): the
cluster can come from ``dask-jobqueue`` (SLURM, PBS...), ``dask-kubernetes`` or ``dask-scheduler``
plus ``dask-worker`` by hand (see ``docs/dask_clusters.md``). Workers need emzoo installed and must
read the model package and the input, and write the output, under the same paths as the client (a
shared file system). Each worker process loads the model once (:func:`worker_predictor` caches it) and
keeps it for all its chunks; one thread per worker process is best, the model's runtime (ONNX
Runtime, PyTorch) uses the cores itself.

The run is resumable like a local one: every finished chunk is recorded in the store, a re-run (on a
cluster or not) skips it, and the store is finalised only when every chunk is done. The workers keep
each sample's statistics in the store's record too, and the client writes the provenance record
(:mod:`emzoo.drivers.provenance`) when it publishes the outputs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from emzoo.drivers import provenance
from emzoo.drivers.chunks import Job, StreamPlan
from emzoo.drivers.options import InputOptions, OutputOptions, StreamOptions
from emzoo.drivers.stream_store import Stores
from emzoo.drivers.streaming import ChunkRunner, StreamResult, begin, predict_streaming
from emzoo.errors import EmzooError, InputError, UsageError
from emzoo.io.meta import Image
from emzoo.runtime.predictor import Predictor
from emzoo.runtime.settings import DeviceSpec, TileSettings

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ModelRef:
    """How a worker loads the model: the package path (as the workers see it) and the run settings."""

    path: str
    weight_format: str | None = None
    device: DeviceSpec = field(default_factory=DeviceSpec)
    settings: TileSettings = field(default_factory=TileSettings)
    trust_package_code: bool = False  # as the user said for the loaded model (emzoo.package.trust)

    @classmethod
    def of(cls, predictor: Predictor) -> ModelRef:
        """The reference of a loaded model: the device as requested (``cuda:1`` stays ``cuda:1``)."""
        source = Path(predictor.package.source)
        path = str(source.resolve()) if source.exists() else str(source)
        return cls(
            path,
            predictor.weights.format,
            predictor.requested_device,
            predictor.settings,
            predictor.package.trust_code,
        )


@dataclass(frozen=True)
class InputRef:
    """How a worker opens the input again: its path and whether it is a folder of slices."""

    path: str
    stack: bool = False

    def open(self) -> Image:
        from emzoo.io import read_image, read_slice_folder

        return read_slice_folder(self.path) if self.stack else read_image(self.path)


# one per worker process, kept between tasks
_PREDICTORS: dict[ModelRef, Predictor] = {}
_IMAGES: dict[InputRef, Image] = {}


def worker_predictor(model: ModelRef) -> Predictor:
    """The model, loaded once per process."""
    if model not in _PREDICTORS:
        _PREDICTORS[model] = Predictor(
            model.path,
            weight_format=model.weight_format,
            trust_package_code=model.trust_package_code,
            device=model.device,
            settings=model.settings,
        )
    return _PREDICTORS[model]


def worker_image(source: InputRef) -> Image:
    if source not in _IMAGES:
        if len(_IMAGES) > 8:
            _IMAGES.pop(next(iter(_IMAGES)))
        _IMAGES[source] = source.open()
    return _IMAGES[source]


def statistics_task(model: ModelRef, source: InputRef, plan: StreamPlan, sample: int | None) -> dict:
    """One sample's normalisation statistics (a streaming pass over it), computed on a worker."""
    runner = ChunkRunner(worker_predictor(model), worker_image(source), plan)
    return runner.statistics(sample)


def chunk_task(
    model: ModelRef, source: InputRef, plan: StreamPlan, stores: Stores, job: Job, stats: dict
) -> tuple[str, float, dict]:
    """Predict one chunk, write it into the stores and record it; returns its name, seconds and
    tiling (for the provenance record)."""
    t0 = time.perf_counter()
    predictor = worker_predictor(model)
    runner = ChunkRunner(predictor, worker_image(source), plan)
    blocks = runner.compute(job, stats)
    stores.keep_statistics(job.sample, provenance.statistics_section(predictor.spec, stats))
    stores.write(plan, job, blocks)
    seconds = time.perf_counter() - t0
    stores.mark_done(job, seconds)
    return job.name, seconds, provenance.tiling(predictor)


def connect(client):
    """A :class:`distributed.Client` for ``client``: a Client, a scheduler address, or None for the
    current default client."""
    try:
        from distributed import Client, get_client
    except ImportError:
        raise UsageError(
            "{client} needs dask.distributed: pip install distributed, or the [dask] extra of emzoo"
        ) from None
    if client is None:
        try:
            return get_client()
        except ValueError:
            raise UsageError("no dask client: pass client= (a Client or a scheduler address)") from None
    if isinstance(client, str):
        try:
            return Client(client, timeout="20s")
        except OSError as e:
            raise UsageError(f"{{client}} {client}: cannot reach the dask scheduler ({e})") from None
    return client


def run_distributed(
    predictor: Predictor,
    image: Image,
    source: InputRef,
    finals: Mapping[str, Path],
    *,
    output: OutputOptions,
    inputs: InputOptions | None = None,
    stream: StreamOptions | None = None,
    progress: Progress | None = None,
    record: dict | None = None,
) -> StreamResult:
    """Stream ``image`` into ``finals`` with the chunks computed on the cluster of ``stream.client``.

    ``predictor`` (loaded here) only plans; the workers load the model themselves from its path.
    ``record``: the provenance record begun by the caller (None: begun here).
    """
    from distributed import as_completed

    stream = stream or StreamOptions()
    start = time.perf_counter()
    client = connect(stream.client)
    model = ModelRef.of(predictor)
    run = begin(predictor, image, finals, output=output, inputs=inputs, stream=stream, record=record)
    plan, stores, result = run.plan, run.stores, run.result
    if run.todo:
        # the task arguments are small records: the workers read and write the pixels themselves
        stats = {
            s: client.submit(statistics_task, model, source, plan, s, pure=False)
            for s in dict.fromkeys(j.sample for j in run.todo)
        }
        futures = [
            client.submit(chunk_task, model, source, plan, stores, job, stats[job.sample], pure=False)
            for job in run.todo
        ]
        log.info("submitted %d chunks to %s", len(futures), client)
        failed: BaseException | None = None
        for future in as_completed(futures):
            try:
                _, _, tiling = future.result()
                if not result.computed:
                    run.record["runtime"].update(tiling)
                result.computed += 1
            except Exception as e:  # let the others finish: their chunks are recorded for a re-run
                failed = failed or e
            if progress is not None:
                progress(result.skipped + result.computed, result.total)
        if failed is not None:
            if isinstance(failed, EmzooError):
                raise failed
            raise InputError(f"a chunk failed on the cluster: {type(failed).__name__}: {failed}") from failed
    run.finish()
    result.seconds = time.perf_counter() - start
    return result


def predict_zarr(
    model: str | Path | Predictor,
    input: str | Path,
    output: str | Path | Mapping[str, str | Path],
    *,
    client=None,
    slices: bool = False,
    stack: bool = False,
    chunk: int | tuple[int, ...] | None = None,
    output_format: str = "ome-zarr",
    weight_format: str | None = None,
    device: str | DeviceSpec = "auto",
    settings: TileSettings | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> StreamResult:
    """Predict a (large) image chunk by chunk on a dask.distributed cluster into an OME-Zarr store.

    Parameters
    ----------
    model
        A model package (zip, folder or rdf.yaml) that every worker can read at this path, or a
        loaded :class:`Predictor`.
    input
        Zarr/OME-Zarr store, MRC, uncompressed TIFF, ``.npy``; a folder of slices with ``stack=True``.
    output
        The output store (``.ome.zarr``) for one-output models, or ``{output id: path}``.
    client
        A :class:`distributed.Client`, a scheduler address (``"tcp://host:8786"``), or None for the
        current default client; with ``client=False`` the chunks run here, in this process.
    slices, stack, chunk, output_format, overwrite
        As the fields of :class:`~emzoo.drivers.options.InputOptions`, ``StreamOptions`` and
        ``OutputOptions`` (this function is the keyword facade over them).

    Examples
    --------
    >>> from distributed import Client, LocalCluster
    >>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))  # doctest: +SKIP
    >>> predict_zarr("model.zip", "volume.ome.zarr", "prob.ome.zarr", client=client)  # doctest: +SKIP
    """
    predictor = (
        model
        if isinstance(model, Predictor)
        else Predictor(model, weight_format=weight_format, device=device, settings=settings)
    )
    source = InputRef(str(Path(input).resolve()), stack)
    image = source.open()
    if isinstance(output, Mapping):
        finals = {k: Path(v) for k, v in output.items()}
    else:
        out = Path(output)
        ids = [t.id for t in predictor.spec.outputs]
        finals = (
            {ids[0]: out}
            if len(ids) == 1
            else {i: out.with_name(f"{out.name.split('.')[0]}_{i}{''.join(out.suffixes)}") for i in ids}
        )
    missing = [t.id for t in predictor.spec.outputs if t.id not in finals]
    if missing:
        raise UsageError(f"no output path for {', '.join(missing)}")
    records = {
        "output": OutputOptions(format=output_format, overwrite=overwrite),
        "inputs": InputOptions(slices=slices, stack=stack),
        "progress": progress,
    }
    if client is False:
        return predict_streaming(predictor, image, finals, stream=StreamOptions(chunk=chunk), **records)
    stream = StreamOptions(chunk=chunk, client=client)
    return run_distributed(predictor, image, source, finals, stream=stream, **records)
