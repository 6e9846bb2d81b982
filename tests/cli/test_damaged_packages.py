"""A damaged package zip is one line naming the damaged member, and leaves nothing in the cache."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from emzoo.cli import main


def _damaged(source: Path, target: Path, compression: int, where: str) -> Path:
    """A copy of ``source`` whose ``weights.onnx`` has one byte flipped (``where``: in its compressed
    stream's first byte, or in its middle)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", compression) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with zipfile.ZipFile(target) as z:
        info = z.getinfo("weights.onnx")
    data = bytearray(target.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + (0 if where == "start" else info.compress_size // 2)] ^= 0xFF
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize(
    ("compression", "where", "detail"),
    [
        (zipfile.ZIP_STORED, "middle", "BadZipFile: Bad CRC-32 for file 'weights.onnx'"),
        (zipfile.ZIP_DEFLATED, "start", "error: Error -3 while decompressing data"),
    ],
)
def test_a_damaged_member_is_named(tiny_unet2d, tmp_path, monkeypatch, compression, where, detail):
    cache = tmp_path / "cache"
    monkeypatch.setenv("EMZOO_CACHE_DIR", str(cache))
    bad = _damaged(tiny_unet2d, tmp_path / "bad.zip", compression, where)
    result = CliRunner().invoke(main, ["info", str(bad)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "the member 'weights.onnx' is damaged" in lines[0], result.output
    assert detail in lines[0] and "get the package again" in lines[0]
    assert list((cache / "packages").iterdir()) == []  # no partial folder left


def test_an_empty_zip_has_no_description(tmp_path, monkeypatch):
    monkeypatch.setenv("EMZOO_CACHE_DIR", str(tmp_path / "cache"))
    zipfile.ZipFile(tmp_path / "empty.zip", "w").close()
    result = CliRunner().invoke(main, ["info", str(tmp_path / "empty.zip")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no rdf.yaml or bioimageio.yaml found in the package" in result.output, result.output
