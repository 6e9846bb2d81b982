"""Headless napari: Qt draws offscreen (set before Qt is imported); the viewer in these tests is
``napari.components.ViewerModel`` (there is no OpenGL here for ``napari.Viewer``)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile

from tests.conftest import REPO

ZOO = REPO / "zoo_models"
MEMBRANE = ZOO / "em-membrane-unet2d"
COUNTER = ZOO / "em-particle-counter"


def write_mrc(path: Path, data: np.ndarray, voxel_size_angstrom: float) -> Path:
    """A small MRC file with a known voxel size (Å), as a microscope would write it."""
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = voxel_size_angstrom
    return path


@pytest.fixture
def membrane_crop() -> np.ndarray:
    """256x256 of the membrane model's own sample input (real ssTEM, 4 nm/px)."""
    return tifffile.imread(MEMBRANE / "sample_input.tif")[:256, :256]


@pytest.fixture
def counter_crop() -> np.ndarray:
    """256x256 of the counter's own sample input (real HAADF-STEM nanoparticles)."""
    return tifffile.imread(COUNTER / "sample_input.tif")[:256, :256]


@pytest.fixture
def mrc_4nm(tmp_path, membrane_crop) -> Path:
    """The membrane crop as MRC with the training data's pixel size, 4 nm (40 Å)."""
    return write_mrc(tmp_path / "crop.mrc", membrane_crop.astype(np.uint16), 40.0)


@pytest.fixture(scope="session")
def plugins():
    """npe2's plugin manager with the installed plugins discovered (as napari does when it starts)."""
    import npe2

    manager = npe2.PluginManager.instance()
    manager.discover()
    assert "emzoo" in manager._manifests, "emzoo's manifest is not installed: pip install -e . --no-deps"
    return manager
