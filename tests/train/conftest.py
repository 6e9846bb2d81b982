"""Fixtures of the training tests: tiny synthetic membrane data and the parameters that train on it
in about a second."""

from __future__ import annotations

import importlib.util

import pytest

if importlib.util.find_spec("torch") is None:  # these tests need emzoo[train] (torch, scikit-image)
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def membrane():
    from emzoo.train.discovery import get_usecase

    return get_usecase("membrane_segmentation")


@pytest.fixture
def tiny_data(membrane, tmp_path):
    return membrane.make_tiny_data(tmp_path / "data")


@pytest.fixture
def tiny(membrane):
    """``--set`` words for a one-second epoch."""
    return [f"{k}={v}" for k, v in membrane.tiny_params.items()]
