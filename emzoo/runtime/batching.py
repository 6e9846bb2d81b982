"""Blocks in batches: how many per network call, what to do when they do not fit, and the pipeline
that keeps the accelerator busy.

- :func:`plan_batch` and :func:`batch_from_memory` decide from numbers (pure): on CUDA as many blocks as
  the free memory holds (a share of it, at most :data:`MAX_BATCH`, never more than the image has); on
  CPU one (measured fastest there) unless the user asks for more.
- The numbers come from the backend when it measures them (:class:`MemoryGauge`: torch on CUDA, a
  probe block's peak), else from the driver (:func:`nvidia_free_bytes`) and a per-pixel estimate.
- :class:`Batches` runs an image's blocks in groups; a group that runs out of memory
  (:func:`is_out_of_memory`: torch's and onnxruntime's errors) is run again at half the batch, which
  stays halved for the rest of the run; at one block the error says to choose smaller blocks. With
  ``prefetch`` the next group is read and normalised, and the network runs, in worker threads while
  the caller stitches the group before (:func:`prefetched`).
"""

from __future__ import annotations

import gc
import logging
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar, runtime_checkable

from emzoo.errors import BackendError, literal

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH = 32  # blocks per call at most: larger batches gain nothing once the GPU is full
CUDA_BATCH = 4  # on CUDA when the free memory cannot be measured
MEMORY_SHARE = 0.8  # of the free memory a batch may fill (cuDNN workspaces, fragmentation)
# bytes per input pixel of a block where the backend cannot measure it (onnxruntime): the membrane
# U-Net's 912 px block peaks at 452 MB on CPU (emzoo/runtime/backends/onnx.py), ~540 B/px; doubled for
# CUDA's workspaces. A wider network runs out of memory sooner: the batch is then halved.
BYTES_PER_PIXEL = 1024
_OOM_TEXT = (
    "out of memory",  # torch ("CUDA out of memory"), CUDA ("cudaErrorMemoryAllocation: out of memory")
    "failed to allocate memory",  # onnxruntime's BFC arena
    "cudnn_status_alloc_failed",
    "not enough memory",  # torch's CPU allocator
)

BatchFor = Callable[[Sequence[int], int], "int | None"]  # (block per grid axis, n blocks) -> batch


def batch_from_memory(free_bytes: int, bytes_per_block: int, n_blocks: int, cap: int = MAX_BATCH) -> int:
    """The blocks that fit in :data:`MEMORY_SHARE` of ``free_bytes``, at least 1, at most ``cap`` and
    ``n_blocks``.

    >>> batch_from_memory(80 * 2**30, 2**30, 100)  # 80 GiB free, 1 GiB per block: 64 fit, capped
    32
    >>> batch_from_memory(10 * 2**30, 2**30, 100), batch_from_memory(10 * 2**30, 2**30, 5)
    (8, 5)
    """
    fits = int(free_bytes * MEMORY_SHARE // bytes_per_block) if bytes_per_block > 0 else cap
    return max(1, min(cap, n_blocks, fits))


def plan_batch(
    given: int | None,
    *,
    device: str,
    batchable: bool,
    blocks: Sequence[int],
    n_blocks: int,
    batch_for: BatchFor | None = None,
) -> int:
    """Blocks per network call: 1 when the model's batch axis takes one; else the user's ``given``; on
    CPU 1; on CUDA what ``batch_for`` (blocks of ``blocks`` px, ``n_blocks`` of them) measures, else
    :data:`CUDA_BATCH`."""
    if not batchable:
        return 1
    if given is not None:
        return given
    if not device.startswith("cuda"):
        return 1  # CPU: the network already uses every core on one block; more only cost memory
    found = batch_for(blocks, n_blocks) if batch_for is not None else None
    return found if found is not None else CUDA_BATCH


@runtime_checkable
class MemoryGauge(Protocol):
    """A backend that measures its device memory (None: it cannot, e.g. on CPU)."""

    def free_bytes(self) -> int | None: ...

    def block_bytes(self, shapes: Sequence[tuple[int, ...]]) -> int | None: ...


def nvidia_free_bytes(index: int) -> int | None:
    """Free memory of CUDA device ``index`` (as the process numbers it) from ``nvidia-smi``; None
    without it. Thin wrapper: onnxruntime does not say how much memory its device has free."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    ident = visible[index] if index < len(visible) else str(index)
    try:
        done = subprocess.run(
            [exe, "--query-gpu=memory.free", "--format=csv,noheader,nounits", f"--id={ident}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return int(float(done.stdout.split()[0]) * 2**20)  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def device_index(device: str) -> int:
    """``cuda:1`` -> 1; ``cuda`` -> 0."""
    _, _, index = device.partition(":")
    return int(index) if index.isdigit() else 0


def measure_memory(backend: object, shapes: Sequence[tuple[int, ...]]) -> tuple[int, int] | None:
    """(free bytes, bytes per block of input ``shapes``) for ``backend``'s device; None on CPU or when
    neither the backend nor the driver tells."""
    if isinstance(backend, MemoryGauge):
        free, per_block = backend.free_bytes(), backend.block_bytes(shapes)
    elif str(getattr(backend, "device", "cpu")).startswith("cuda"):
        free = nvidia_free_bytes(device_index(str(backend.device)))  # type: ignore[attr-defined]
        per_block = BYTES_PER_PIXEL * sum(math.prod(s) for s in shapes)
    else:
        return None
    if free is None or per_block is None:
        return None
    return free, per_block


def is_out_of_memory(error: BaseException) -> bool:
    """Does ``error`` (or its cause) say that the device ran out of memory?"""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, MemoryError) or type(seen).__name__ == "OutOfMemoryError":
            return True
        text = str(seen).lower()
        if any(t in text for t in _OOM_TEXT):
            return True
        seen = seen.__cause__
    return False


def release_memory() -> None:
    """Free what a failed batch left: unreachable tensors, then torch's cached CUDA blocks."""
    gc.collect()
    torch = sys.modules.get("torch")  # only when torch is loaded already: never imported for this
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


_END = object()


def prefetched(items: Iterator[T]) -> Iterator[T]:
    """``items``, each next one computed in a worker thread while the caller uses the one before."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emzoo-prefetch")
    try:
        future = pool.submit(next, items, _END)
        while (item := future.result()) is not _END:
            future = pool.submit(next, items, _END)
            yield item  # type: ignore[misc]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        close = getattr(items, "close", None)
        if close is not None:
            close()


class Batches:
    """Runs the blocks of each image in groups of at most the plan's batch size; halves the batch
    for the rest of the run when a group runs out of memory; with ``prefetch`` (on CUDA), prepares and
    runs the next groups in worker threads while the caller stitches."""

    def __init__(self, device: str, *, prefetch: bool = False):
        self.device = device
        self.prefetch = prefetch
        self.limit: int | None = None  # the batch after an out-of-memory error, for the rest of the run
        self.notes: list[str] = []  # what happened, in words (each halving)
        self._memory: dict[tuple, tuple[int, int] | None] = {}

    def fit(self, backend: object, shapes: Sequence[tuple[int, ...]], n_blocks: int) -> int | None:
        """The batch for blocks of input ``shapes`` that fits the device's free memory (measured once
        per backend and block shape), or None where it is not measured."""
        key = (id(backend), tuple(tuple(s) for s in shapes))
        if key not in self._memory:
            found, failed = None, False
            try:
                found = measure_memory(backend, shapes)
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
                failed = True
            if failed:  # not even the probe block fits: batch 1, whose run then says so
                release_memory()
                found = (0, 1)
            self._memory[key] = found
            if found is not None:
                log.info(
                    "%s: %.0f MB free, %.0f MB per block of %s: batch %d",
                    self.device,
                    found[0] / 1e6,
                    found[1] / 1e6,
                    "x".join(map(str, shapes[0])),
                    batch_from_memory(*found, MAX_BATCH),
                )
        found = self._memory[key]
        return None if found is None else batch_from_memory(found[0], found[1], n_blocks)

    def run(
        self,
        items: Sequence[T],
        size: int,
        prepare: Callable[[Sequence[T]], object],
        compute: Callable[[object], R],
        *,
        block: str = "",
    ) -> Iterator[tuple[Sequence[T], R]]:
        """``(group, compute(prepare(group)))`` for consecutive groups of ``items`` of at most
        ``size`` (and :attr:`limit`); ``block`` (e.g. ``512x512``) names the block in errors."""
        start = 0
        while start < len(items):
            size = min(size, self.limit or size)
            failed = None
            try:
                for group, result in self._pipeline(items[start:], size, prepare, compute):
                    yield group, result
                    start += len(group)
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
                failed = " ".join(str(e).split())[:200]  # text only: the error holds the batch's tensors
            if failed is None:
                return
            release_memory()
            self._halve(size, failed, block)

    def _pipeline(
        self,
        items: Sequence[T],
        size: int,
        prepare: Callable[[Sequence[T]], object],
        compute: Callable[[object], R],
    ) -> Iterator[tuple[Sequence[T], R]]:
        """The groups of ``items``, prepared and computed (with ``prefetch``: one step ahead each)."""
        groups = (items[i : i + size] for i in range(0, len(items), size))
        prepared = ((g, prepare(g)) for g in groups)
        if self.prefetch:
            prepared = prefetched(prepared)
        done = ((g, compute(a)) for g, a in prepared)
        return prefetched(done) if self.prefetch else done

    def _halve(self, size: int, why: str, block: str) -> None:
        where = "GPU memory" if self.device.startswith("cuda") else "memory"
        if size <= 1:
            of = f" of {block} px" if block else ""
            raise BackendError(
                f"out of {where} on {self.device} with a single block{of} ({literal(why)}): choose smaller "
                "blocks with {tile}"
            )
        self.limit = size // 2
        note = f"out of {where} at batch {size}: continuing with batch {self.limit}"
        log.warning(note)
        self.notes.append(note)
