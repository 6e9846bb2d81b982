"""Reader fuzzing: seeded random mutations (bit flips, truncation, byte insertion and deletion, header
fields set to edge values, spliced blocks) of real small files, one set per reader (TIFF, PNG, JPEG,
MRC, DM3/DM4, EMD, NPY, OME-Zarr), each read with :func:`emzoo.io.read_image`.

A reader may succeed or raise :class:`emzoo.errors.EmzooError`; any other exception, a crash of the
process (a segfault in a decoder) or a hang (``PER_CASE_SECONDS``) is a failure, reported with the
seed file, the mutation and a copy of the mutated file. The files are read in a worker subprocess
(restarted after a crash or a hang) with its address space capped, so that a mutated header that
claims terabytes fails as a MemoryError instead of taking the machine.

Time budget: ``EMZOO_FUZZ_SECONDS`` (default 120 s for all readers together, shared equally), e.g.
``EMZOO_FUZZ_SECONDS=600`` on demand; ``EMZOO_FUZZ_SEED`` changes the mutations (default 0).
"""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED_DATA
from tests.reliability import builders as b

BUDGET = float(os.environ.get("EMZOO_FUZZ_SECONDS", "120"))
SEED = int(os.environ.get("EMZOO_FUZZ_SEED", "0"))
PER_CASE_SECONDS = 10.0
MEMORY_CAP = 6 * 1024**3  # the worker's address space
TOKEN = "@@emzoo-fuzz@@"
READERS = ("tiff", "png", "jpeg", "mrc", "dm", "emd", "npy", "ome-zarr")

WORKER = f"""
import json, os, resource, sys, traceback, warnings
resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_CAP}, {MEMORY_CAP}))
warnings.simplefilter("ignore")
import numpy as np
from emzoo.errors import EmzooError
from emzoo.io import read_image

for line in sys.stdin:
    path = line.rstrip("\\n")
    reply = {{"path": path}}
    try:
        image = read_image(path)
        reply["result"] = "ok"
        try:
            data = image.data
            nbytes = int(np.prod(image.shape)) * np.dtype(data.dtype).itemsize
            if nbytes <= 64 * 2**20:
                np.asarray(data[(slice(None),) * data.ndim]).sum()
        except Exception as e:  # after a successful read: noted, not judged
            reply["access"] = f"{{type(e).__name__}}: {{str(e)[:200]}}"
    except EmzooError as e:
        reply["result"] = "emzoo"
        reply["message"] = str(e)[:300]
    except BaseException as e:
        reply["result"] = "other"
        reply["message"] = f"{{type(e).__name__}}: {{str(e)[:300]}}"
        reply["where"] = traceback.format_exc().strip().splitlines()[-6:]
    sys.stdout.write({TOKEN!r} + json.dumps(reply) + "\\n")
    sys.stdout.flush()
"""


# -- the seed files ----------------------------------------------------------------------------------


def _small_shared(*parts: str, max_bytes: int = 10 * 2**20) -> list[Path]:
    path = SHARED_DATA.joinpath(*parts)
    return [path] if path.is_file() and path.stat().st_size <= max_bytes else []


def _tiff_seeds(d: Path) -> list[Path]:
    g = b.rng(3)
    seeds = [
        b.tif(d / "u8.tif", g.integers(0, 255, (32, 32), dtype=np.uint8)),
        b.tif(
            d / "u16-stack.tif", g.integers(0, 4000, (4, 16, 16), dtype=np.uint16), photometric="minisblack"
        ),
        b.tif(d / "f32-zlib.tif", g.random((32, 32), dtype=np.float32), compression="zlib"),
        b.tif(d / "tiled.tif", g.integers(0, 255, (64, 64), dtype=np.uint8), tile=(16, 16)),
        b.tif(d / "rgb.tif", g.integers(0, 255, (16, 16, 3), dtype=np.uint8), photometric="rgb"),
        b.tif(
            d / "imagej.tif",
            g.integers(0, 255, (3, 16, 16), dtype=np.uint8),
            imagej=True,
            resolution=(2.0, 2.0),
            metadata={"unit": "nm", "axes": "ZYX"},
        ),
        b.tif(
            d / "a.ome.tif",
            g.integers(0, 255, (16, 16), dtype=np.uint8),
            metadata={"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5},
        ),
    ]
    return seeds + _small_shared("noisy_tem", "bioimageio_demo_inputs", "9.tif")


def _png_seeds(d: Path) -> list[Path]:
    from PIL import Image

    g = b.rng(4)
    seeds = [
        b.png(d / "u8.png", g.integers(0, 255, (32, 32), dtype=np.uint8)),
        b.png(d / "u16.png", g.integers(0, 60000, (16, 16), dtype=np.uint16)),
        b.png(d / "rgba.png", g.integers(0, 255, (16, 16, 4), dtype=np.uint8)),
    ]
    palette = Image.fromarray(g.integers(0, 255, (16, 16, 3), dtype=np.uint8)).convert("P")
    palette.save(d / "palette.png")
    return [*seeds, d / "palette.png", b.EXAMPLE]


def _jpeg_seeds(d: Path) -> list[Path]:
    g = b.rng(5)
    return [
        b.jpeg(d / "gray.jpg", g.integers(0, 255, (32, 32), dtype=np.uint8)),
        b.jpeg(d / "rgb.jpeg", g.integers(0, 255, (24, 24, 3), dtype=np.uint8)),
        *_small_shared("sem_denoising", "BSE.jpg"),
    ]


def _mrc_seeds(d: Path) -> list[Path]:
    import mrcfile

    g = b.rng(6)
    seeds = [
        b.mrc(d / "i8.mrc", g.integers(-100, 100, (32, 32), dtype=np.int8)),
        b.mrc(d / "f32.mrc", g.random((4, 16, 16), dtype=np.float32)),
        b.mrc(d / "u16.mrc", g.integers(0, 4000, (16, 16), dtype=np.uint16)),
    ]
    with mrcfile.new(d / "stack.mrcs", overwrite=True) as m:
        m.set_data(g.random((3, 16, 16), dtype=np.float32))
        m.set_image_stack()
        m.set_extended_header(np.zeros(4, dtype=[("a", "<i4"), ("b", "<f4")]))
    seeds.append(d / "stack.mrcs")
    return seeds + _small_shared("cryoem_micrographs", "EMD-3197.map")


def _npy_seeds(d: Path) -> list[Path]:
    g = b.rng(7)
    fortran = np.asfortranarray(g.random((16, 24), dtype=np.float32))
    seeds = [
        b.npy(d / "u8.npy", g.integers(0, 255, (32, 32), dtype=np.uint8)),
        b.npy(d / "f32-3d.npy", g.random((3, 16, 16), dtype=np.float32)),
        b.npy(d / "fortran.npy", fortran),
    ]
    with open(d / "v2.npy", "wb") as f:
        np.lib.format.write_array(f, g.random((8, 8)), version=(2, 0))
    return [*seeds, d / "v2.npy"]


def _zarr_seeds(d: Path) -> list[Path]:
    from emzoo.io import ImageMeta, write_image

    g = b.rng(8)
    meta = ImageMeta(axes="yx", pixel_size={"y": 2.0, "x": 2.0}, unit="nanometer")
    write_image(d / "a.ome.zarr", g.random((32, 32), dtype=np.float32), meta, format="ome-zarr")
    meta3 = ImageMeta(axes="zyx", pixel_size={"z": 1.0, "y": 1.0, "x": 1.0}, unit="nanometer")
    write_image(d / "v.ome.zarr", g.integers(0, 255, (4, 16, 16), dtype=np.uint8), meta3, format="ome-zarr")
    return [d / "a.ome.zarr", d / "v.ome.zarr"]


SEEDS: dict[str, Callable[[Path], list[Path]]] = {
    "tiff": _tiff_seeds,
    "png": _png_seeds,
    "jpeg": _jpeg_seeds,
    "mrc": _mrc_seeds,
    "dm": lambda d: _small_shared("em_file_formats", "Se_implanted_MoS2.dm3"),
    "emd": lambda d: _small_shared("em_file_formats", "Au_nanoparticle.emd"),
    "npy": _npy_seeds,
    "ome-zarr": _zarr_seeds,
}


# -- mutations ---------------------------------------------------------------------------------------

EDGE_VALUES = (0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 2**16, 2**24, 2**31 - 1)


def mutate(data: bytes, r: random.Random) -> tuple[bytes, str]:
    """One random mutation of ``data`` and what it was."""
    if not data:
        return bytes(r.randrange(256) for _ in range(16)), "random bytes for an empty file"
    buf = bytearray(data)
    n = len(buf)
    head = min(n, 1024)
    kind = r.choice(("flip", "flip-header", "truncate", "insert", "delete", "field", "splice", "fill"))
    if kind in ("flip", "flip-header"):
        span = head if kind == "flip-header" else n
        positions = [r.randrange(span) for _ in range(r.randint(1, 8))]
        for p in positions:
            buf[p] ^= 1 << r.randrange(8)
        return bytes(buf), f"{kind} bits at {positions}"
    if kind == "truncate":
        cut = r.choice((r.randrange(n), r.randrange(head), max(0, n - r.randint(1, 64))))
        return bytes(buf[:cut]), f"truncate to {cut} of {n} bytes"
    if kind == "insert":
        p, k = r.randrange(n + 1), r.randint(1, 64)
        return bytes(
            buf[:p] + bytes(r.randrange(256) for _ in range(k)) + buf[p:]
        ), f"insert {k} bytes at {p}"
    if kind == "delete":
        p, k = r.randrange(n), r.randint(1, 64)
        return bytes(buf[:p] + buf[p + k :]), f"delete {k} bytes at {p}"
    if kind == "field":
        p = r.randrange(0, max(1, head - 4), 2)
        width = r.choice((1, 2, 4))
        value = r.choice(EDGE_VALUES) & ((1 << (8 * width)) - 1)
        order = r.choice(("little", "big"))
        buf[p : p + width] = value.to_bytes(width, order)[: len(buf[p : p + width])]
        return bytes(buf), f"set {width}-byte {order}-endian field at {p} to {value:#x}"
    if kind == "splice":
        a, k = r.randrange(n), r.randint(1, 256)
        p = r.randrange(n)
        return bytes(buf[:p] + buf[a : a + k] + buf[p:]), f"copy {k} bytes from {a} to {p}"
    p, k = r.randrange(n), r.randint(1, 512)
    value = r.choice((0x00, 0xFF))
    buf[p : p + k] = bytes([value]) * len(buf[p : p + k])
    return bytes(buf), f"fill {k} bytes at {p} with {value:#x}"


def mutate_json(text: str, r: random.Random) -> tuple[str, str]:
    """Metadata mutations of a Zarr JSON document: numbers to edge values, keys dropped, truncation."""
    try:
        doc = json.loads(text)
    except ValueError:
        return text[: r.randrange(len(text) + 1)], "truncate damaged JSON"
    nodes: list[tuple[object, object]] = []

    def walk(node):
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in list(items):
            nodes.append((node, k))
            walk(v)

    walk(doc)
    if not nodes or r.random() < 0.15:
        cut = r.randrange(len(text) + 1)
        return text[:cut], f"truncate JSON to {cut} characters"
    parent, key = r.choice(nodes)
    choice = r.choice(("edge", "negative", "drop", "string", "null", "nest"))
    if choice == "drop" and isinstance(parent, dict):
        del parent[key]
    elif choice == "edge":
        parent[key] = r.choice((0, 2**31 - 1, 2**63 - 1, 10**30, 1e308))
    elif choice == "negative":
        parent[key] = -r.choice((1, 7, 2**31))
    elif choice == "string":
        parent[key] = "\u0000garbage"
    elif choice == "nest":
        parent[key] = [[[[]]]]
    else:
        parent[key] = None
    return json.dumps(doc), f"{choice} at {key!r}"


@dataclass
class Mutant:
    path: Path
    description: str


def make_mutant(seed: Path, work: Path, r: random.Random, i: int) -> Mutant:
    """A mutated copy of ``seed`` (a file, or a Zarr folder with one of its files mutated)."""
    target = work / f"m{i % 4}{_suffix(seed)}"
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    if seed.is_dir():
        shutil.copytree(seed, target)
        members = sorted(p for p in target.rglob("*") if p.is_file())
        metadata = [p for p in members if p.suffix == ".json" or p.name.startswith(".z")]
        member = r.choice(metadata if metadata and r.random() < 0.7 else members)
        if member in metadata and r.random() < 0.7:
            text, how = mutate_json(member.read_text(), r)
            member.write_text(text)
        else:
            data, how = mutate(member.read_bytes(), r)
            member.write_bytes(data)
        return Mutant(target, f"{seed.name}: {member.relative_to(target)}: {how}")
    data, how = mutate(seed.read_bytes(), r)
    target.write_bytes(data)
    return Mutant(target, f"{seed.name}: {how}")


def _suffix(seed: Path) -> str:
    name = seed.name.lower()
    for s in (".ome.tif", ".ome.zarr"):
        if name.endswith(s):
            return s
    return seed.suffix


# -- the worker --------------------------------------------------------------------------------------


class Worker:
    """A subprocess that reads the files it is given with ``read_image`` and says how it went."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.replies: queue.Queue = queue.Queue()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=self.env,
        )
        self.replies = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc, self.replies), daemon=True).start()

    @staticmethod
    def _pump(proc: subprocess.Popen, replies: queue.Queue) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(TOKEN):
                replies.put(json.loads(line[len(TOKEN) :]))
        replies.put(None)  # the worker ended

    def read(self, path: Path, timeout: float) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(f"{path}\n")
            self.proc.stdin.flush()
            reply = self.replies.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            return {"result": "hang", "message": f"no answer within {timeout:.0f} s"}
        except BrokenPipeError:
            reply = None
        if reply is None:
            code = self.proc.wait()
            self.proc = None
            return {"result": "crash", "message": f"the reading process died (exit code {code})"}
        return reply

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


# -- the test ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_env() -> dict[str, str]:
    return {**b.env_without_emzoo(), "EMZOO_CACHE_DIR": os.environ["EMZOO_CACHE_DIR"]}


@pytest.mark.parametrize("reader", READERS)
def test_fuzz_reader(reader: str, tmp_path: Path, fuzz_env):
    seeds_dir = tmp_path / "seeds"
    seeds_dir.mkdir()
    seeds = SEEDS[reader](seeds_dir)
    if not seeds:
        pytest.skip(f"no seed file for the {reader} reader (needs the real data under {SHARED_DATA})")
    work = tmp_path / "work"
    work.mkdir()
    found = tmp_path / "found"
    worker = Worker(fuzz_env)
    failures, counts = [], {"ok": 0, "emzoo": 0, "access": 0}
    deadline = time.monotonic() + BUDGET / len(READERS)
    r = random.Random(f"{SEED}-{reader}")
    i = 0
    try:
        baseline = {s.name: worker.read(s, 60)["result"] for s in seeds}
        assert set(baseline.values()) == {"ok"}, f"the unmutated seeds must read: {baseline}"
        while time.monotonic() < deadline:
            seed = seeds[i % len(seeds)]
            mutant = make_mutant(seed, work, r, i)
            reply = worker.read(mutant.path, PER_CASE_SECONDS)
            result = reply["result"]
            if result in ("ok", "emzoo"):
                counts[result] += 1
                counts["access"] += "access" in reply
            else:
                found.mkdir(exist_ok=True)
                keep = found / f"{i:05d}-{mutant.path.name}"
                (shutil.copytree if mutant.path.is_dir() else shutil.copy)(mutant.path, keep)
                where = " | ".join(reply.get("where", []))
                failures.append(
                    f"[{i}] {result}: {mutant.description}: {reply.get('message')} (copy: {keep}) {where}"
                )
            i += 1
    finally:
        worker.stop()
    print(f"fuzz {reader}: {i} mutants, {counts}, {len(failures)} failures (seed {SEED})")
    assert not failures, f"{len(failures)} of {i} mutated {reader} files broke the reader:\n" + "\n".join(
        failures[:20]
    )
