"""Inputs are data, never code, and never trusted for their sizes: pickles are refused, a header that
claims more than the file holds is an error before anything is allocated, link loops are skipped; the
images emzoo writes carry its mark."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from emzoo.errors import InputError
from emzoo.io import ImageMeta, expand_inputs, read_image, write_image
from emzoo.io.limits import available_memory
from emzoo.io.write import written_by_emzoo


class _Payload:
    """Unpickling this runs code: it creates the file ``path``."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_an_object_npy_is_never_unpickled(tmp_path):
    evil = tmp_path / "evil.npy"
    np.save(evil, np.array([_Payload(str(tmp_path / "pwned"))], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match=r"evil.npy: the array holds Python objects \(a pickle\)"):
        read_image(evil)
    assert not (tmp_path / "pwned").exists()


def test_a_truncated_npy(tmp_path):
    path = tmp_path / "cut.npy"
    np.save(path, np.zeros((300, 300), np.float32))
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(InputError, match=r"cut.npy: file is smaller than its header says .*300x300 float32"):
        read_image(path)


def test_a_tiff_that_claims_more_than_it_holds(tmp_path):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.zeros((4, 256, 256), np.uint16), photometric="minisblack")
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(InputError, match=r"cut.tif: file is smaller than its header says .*4x256x256 uint16"):
        read_image(path)


def test_a_compressed_tiff_beyond_memory(tmp_path, monkeypatch):
    from emzoo.io import limits

    path = tmp_path / "packed.tif"
    tifffile.imwrite(path, np.zeros((512, 512), np.float32), compression="zlib")  # 1 MB, 1 kB packed
    monkeypatch.setattr(limits, "available_memory", lambda: 100_000)
    with pytest.raises(InputError, match=r"packed.tif: its compressed 512x512 float32 data needs about"):
        read_image(path)


def test_available_memory_is_known_and_plausible():
    n = available_memory()
    assert n is None or 10**7 < n < 2**50


def test_link_loops_are_skipped_with_a_note(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    tifffile.imwrite(folder / "a.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(folder / "sub" / "b.tif", np.zeros((8, 8), np.uint8))
    (folder / "sub" / "up").symlink_to("..")  # back up the tree
    (folder / "self.tif").symlink_to("self.tif")  # a link to itself
    (folder / "ping").symlink_to("pong")
    (folder / "pong").symlink_to("ping")
    (folder / "gone.tif").symlink_to("nowhere.tif")
    notes: list[str] = []
    files = expand_inputs([folder], notes)
    assert sorted(str(f.relative) for f in files) == ["a.tif", "sub/b.tif"]
    assert sorted(n.split(": ", 1)[1] for n in notes) == [
        "a broken symbolic link (No such file or directory)",
        "a link to a folder searched already (a link loop)",
        "a symbolic link loop",
        "a symbolic link loop",
        "a symbolic link loop",
    ]
    globbed = expand_inputs([str(folder / "*.tif")], notes := [])
    assert [f.path.name for f in globbed] == ["a.tif"] and len(notes) == 2


@pytest.mark.parametrize(("fmt", "suffix"), [("tiff", ".tif"), ("mrc", ".mrc"), ("npy", ".npy"),
                                             ("ome-zarr", ".ome.zarr"), ("png", ".png")])  # fmt: skip
def test_what_emzoo_writes_carries_its_mark(tmp_path, fmt, suffix):
    path = write_image(tmp_path / f"a{suffix}", np.zeros((16, 16), np.uint8), ImageMeta("yx"), format=fmt)
    assert written_by_emzoo(path)
    assert read_image(path).shape == (16, 16)
    if fmt == "npy":  # the sidecar marks this file, not another put in its place
        np.save(path, np.zeros((20, 20), np.uint8))
        assert not written_by_emzoo(path)


def test_files_of_others_carry_no_mark(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((8, 8), np.uint8))
    np.save(tmp_path / "a.npy", np.zeros((8, 8), np.uint8))
    (tmp_path / "notes.txt").write_text("hello")
    for name in ("a.tif", "a.npy", "notes.txt", "missing.tif"):
        assert not written_by_emzoo(tmp_path / name)


def test_the_marker_does_not_name_private_paths():
    from emzoo.io.registry import WRITTEN_BY, is_mark

    assert is_mark(WRITTEN_BY) and is_mark(WRITTEN_BY.encode() + b"\0\0") and not is_mark("tifffile.py")
    assert Path(WRITTEN_BY).name == WRITTEN_BY
