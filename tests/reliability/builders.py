"""Small files for the cases: good images of every dtype and format, damaged and lying files, damaged
and hostile packages, training runs with damaged checkpoints. Everything is tiny; what several cases
share (packages, a training run) is built once per session by :class:`Resources`."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import threading
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "membranes" / "0.png"
MARKER_ENV = "EMZOO_TEST_MARKER"

# what hostile code does when it runs: leave a marker file (the case checks that it is absent)
MARKER_CODE = (
    "import os as _o\n"
    f"_p = _o.environ.get({MARKER_ENV!r})\n"
    "if _p:\n"
    "    open(_p, 'w').write('package code ran')\n"
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def noise(shape=(64, 64), dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """A random image of ``dtype`` spanning a good part of its range."""
    g = rng(seed)
    d = np.dtype(dtype)
    if d == np.bool_:
        return g.random(shape) > 0.5
    if d.kind == "f":
        return g.normal(100.0, 20.0, shape).astype(d)
    info = np.iinfo(d)
    lo, hi = max(info.min, -1000), min(info.max, 1000)
    return g.integers(lo, hi, shape, endpoint=True).astype(d)


# -- writing files -----------------------------------------------------------------------------------


def tif(path: Path, data: np.ndarray, **kwargs) -> Path:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, data, **kwargs)
    return path


def png(path: Path, data: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data).save(path, format="PNG")
    return path


def jpeg(path: Path, data: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data).save(path, format="JPEG", quality=90)
    return path


def mrc(path: Path, data: np.ndarray, voxel: float = 1.0) -> Path:
    import mrcfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        m.voxel_size = voxel
    return path


def npy(path: Path, data: np.ndarray, allow_pickle: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, data, allow_pickle=allow_pickle)
    return path


def text(path: Path, content: str = "this is not an image\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def patch(path: Path, offset: int, fmt: str, *values) -> Path:
    """Overwrite a binary field in place (``struct`` format)."""
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, *values)
    path.write_bytes(bytes(data))
    return path


def mrc_claiming(path: Path, nx: int, ny: int, nz: int, mode: int = 0, data_bytes: int = 64) -> Path:
    """A real MRC file, then its header rewritten to claim another size (the data block stays small)."""
    mrc(path, np.zeros((8, 8), np.int8))
    patch(path, 0, "<3i", nx, ny, nz)
    patch(path, 12, "<i", mode)
    patch(path, 28, "<3i", nx, ny, nz)  # mx, my, mz (sampling) follow the sizes
    data = path.read_bytes()[:1024] + b"\0" * data_bytes
    path.write_bytes(data)
    return path


def tiff_claiming(path: Path, width: int, height: int, data_bytes: int = 64) -> Path:
    """A minimal uncompressed 8-bit TIFF whose tags claim ``width`` x ``height`` (one strip)."""
    entries = [
        (256, 4, 1, width),  # ImageWidth, LONG
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: min-is-black
        (273, 4, 1, 8),  # StripOffsets: the data right after the header
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, min(width * height, 2**32 - 1)),  # StripByteCounts
    ]
    ifd_offset = 8 + data_bytes
    out = bytearray(b"II*\0" + struct.pack("<I", ifd_offset) + b"\x80" * data_bytes)
    out += struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        out += (
            struct.pack("<HHII", tag, kind, count, value)
            if kind == 4
            else struct.pack("<HHIHH", tag, kind, count, value, 0)
        )
    out += struct.pack("<I", 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))
    return path


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims ``width`` x ``height`` (CRC correct), with a tiny IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body + chunk(b"IEND", b""))
    return path


def npy_claiming(path: Path, shape: tuple[int, ...]) -> Path:
    """An ``.npy`` whose header claims ``shape`` (uint8) over a few bytes of data."""
    header = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {shape!r}, }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 16)
    return path


class Payload:
    """Unpickling this runs code: it leaves the marker file."""

    def __reduce__(self):
        return (exec, (MARKER_CODE,))


def pickle_bytes(obj=None) -> bytes:
    import pickle

    return pickle.dumps(obj if obj is not None else {"model": Payload()})


def torch_pickle(path: Path, obj=None) -> Path:
    """A torch checkpoint (zip format) whose pickle holds the payload: ``weights_only`` refuses it."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj if obj is not None else {"model": Payload(), "epoch": 1}, path)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- packages ----------------------------------------------------------------------------------------


def unzip(zip_path: Path, folder: Path) -> Path:
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(folder)
    return folder


def rezip(folder: Path, target: Path, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(target, "w", compression) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder).as_posix())
    return target


def replace_file(package: Path, name: str, content: bytes, *, fix_hash: bool = True) -> Path:
    """Give the package file ``name`` new content; ``fix_hash``: update its sha256 in rdf.yaml too."""
    target = package / name
    old = sha256(target)
    target.write_bytes(content)
    if fix_hash:
        rdf = package / "rdf.yaml"
        rdf.write_text(rdf.read_text().replace(old, sha256(target)))
    return target


def add_zip_entries(zip_path: Path, target: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    """A copy of the zip with more entries."""
    with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        for info, data in entries:
            dst.writestr(info, data)
    return target


def patch_zip_sizes(zip_path: Path, name: str, size: int) -> Path:
    """Make the local and central headers of entry ``name`` claim ``size`` uncompressed bytes."""
    data = bytearray(zip_path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = z.getinfo(name)
    struct.pack_into("<I", data, info.header_offset + 22, size)  # local header: uncompressed size
    pos = 0
    while (pos := data.find(b"PK\x01\x02", pos)) >= 0:
        n = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46 : pos + 46 + n].decode() == name:
            struct.pack_into("<I", data, pos + 24, size)  # central header: uncompressed size
            break
        pos += 4
    zip_path.write_bytes(bytes(data))
    return zip_path


def corrupt_zip_entry(zip_path: Path, target: Path, name: str) -> Path:
    """A stored (uncompressed) copy of the zip with one byte of ``name``'s data flipped: bad CRC."""
    with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    data = bytearray(target.read_bytes())
    with zipfile.ZipFile(target) as z:
        info = z.getinfo(name)
    n, extra = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + n + extra
    data[start + info.compress_size // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    return target


def yaml_alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs" document: ``width ** levels`` strings from a few hundred bytes."""
    lines = ['lol0: &lol0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        refs = ", ".join([f"*lol{i - 1}"] * width)
        lines.append(f"lol{i}: &lol{i} [{refs}]")
    return "\n".join(lines) + "\n"


def with_alias_bomb(rdf: Path) -> Path:
    """The description with a billion-laughs block in its free-form ``config``."""
    bomb = "\n".join("  " + line for line in yaml_alias_bomb().splitlines())
    rdf.write_text(rdf.read_text().rstrip("\n") + "\nbomb:\n" + bomb + "\nlaughs: *lol9\n")
    return rdf


# -- changes to an unpacked package (a folder) ------------------------------------------------------


def flip_byte(name: str):
    def change(folder: Path) -> None:
        data = bytearray((folder / name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / name).write_bytes(bytes(data))

    return change


def garbage(name: str, content: bytes | None = None):
    return lambda folder: replace_file(folder, name, content or os.urandom(4096))


def edit_rdf(old: str, new: str):
    def change(folder: Path) -> None:
        rdf = folder / "rdf.yaml"
        text = rdf.read_text()
        assert old in text, f"{old!r} not in rdf.yaml"
        rdf.write_text(text.replace(old, new, 1))

    return change


def write_rdf(content: str):
    return lambda folder: (folder / "rdf.yaml").write_text(content)


def symlink_entry() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("link")
    info.external_attr = 0o120777 << 16
    return info


def alias_bomb(folder: Path) -> None:
    with_alias_bomb(folder / "rdf.yaml")


def deep_nesting(folder: Path) -> None:
    rdf = folder / "rdf.yaml"
    rdf.write_text(rdf.read_text() + "\nnested: " + "[" * 100_000 + "]" * 100_000 + "\n")


def pickled_weights(folder: Path) -> None:
    torch_pickle(folder / "new.pt")
    replace_file(folder, "weights.pt", (folder / "new.pt").read_bytes())
    (folder / "new.pt").unlink()


def pickled_torchscript(folder: Path) -> None:
    torch_pickle(folder / "new.pt")
    replace_file(folder, "weights_torchscript.pt", (folder / "new.pt").read_bytes())
    (folder / "new.pt").unlink()


def pickled_test_tensor(folder: Path) -> None:
    npy(folder / "new.npy", np.array([Payload()], dtype=object), allow_pickle=True)
    replace_file(folder, "test_input.npy", (folder / "new.npy").read_bytes())
    (folder / "new.npy").unlink()


# -- session resources -------------------------------------------------------------------------------


class Resources:
    """What many cases share, built once (lazily, one at a time) under ``base``."""

    def __init__(self, base: Path, given: dict[str, Path]):
        self.base = base
        self._built: dict[str, Path] = dict(given)
        self._lock = threading.RLock()  # one build at a time: torch's export and training share state

    def get(self, name: str) -> Path:
        if name in self._built:
            return self._built[name]
        with self._lock:
            if name not in self._built:
                builder: Callable[[Resources], Path] = BUILDERS[name]
                self._built[name] = builder(self)
        return self._built[name]


def _state_dict_package(res: Resources, evil: bool) -> Path:
    """A tiny U-Net package with onnx and pytorch_state_dict weights (a folder); ``evil``: its
    architecture file also leaves the marker when imported."""
    folder = res.base / ("sd-evil" if evil else "sd")
    if not evil:
        import torch

        from emzoo.architectures.unet import UNet
        from emzoo.packaging import BuildOptions, package_module
        from tests.tiny_packages import tiny_info

        torch.manual_seed(0)
        pre = (
            {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
            {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["channel", "y", "x"]}},
        )
        arch = (REPO / "emzoo" / "architectures" / "unet.py", "UNet", {"depth": 2, "features": 4})
        options = BuildOptions(
            test_with_bioimageio=False, test_size=64, weight_formats=("onnx", "pytorch_state_dict")
        )
        sample = noise((96, 96), np.uint8)
        net = UNet(depth=2, features=4)
        package_module(
            net, tiny_info("tiny sd", "cyx", pre), sample, folder, architecture=arch, options=options
        )
        return folder
    shutil.copytree(res.get("sd"), folder)
    code = (folder / "unet.py").read_text()
    future = "from __future__ import annotations\n"
    code = code.replace(future, future + MARKER_CODE, 1) if future in code else MARKER_CODE + code
    replace_file(folder, "unet.py", code.encode())
    return folder


def _training_run(res: Resources) -> Path:
    """A membrane-segmentation run folder with one completed epoch (its data beside it)."""
    from emzoo.train.discovery import get_usecase
    from emzoo.train.trainer import train

    uc = get_usecase("membrane_segmentation")
    data = uc.make_tiny_data(res.base / "train-data")
    run = res.base / "train-run"
    train(uc, data, run, overrides=uc.tiny_params, epochs=1, progress=False)
    return run


def _tiny_data(res: Resources) -> Path:
    return res.get("run").parent / "train-data"


BUILDERS: dict[str, Callable[[Resources], Path]] = {
    "sd": lambda res: _state_dict_package(res, evil=False),
    "evil": lambda res: _state_dict_package(res, evil=True),
    "run": _training_run,
    "data": _tiny_data,
}


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


def env_without_emzoo() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EMZOO_")}
