"""Shared fixtures: the real data beside the checkout, a private cache, small synthetic images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EMZOO_SHARED_DATA", REPO.parent / "shared" / "data"))
BIOIMAGEIO_MODELS = SHARED_DATA / "bioimageio_models"


def shared(*parts: str) -> Path:
    """A path under ../shared/data; the calling test is skipped (with the reason) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs the real data at {path} (../shared/data beside the checkout)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Each test session unpacks packages into its own cache, not the user's."""
    if "EMZOO_CACHE_DIR" not in os.environ:
        os.environ["EMZOO_CACHE_DIR"] = str(tmp_path_factory.mktemp("emzoo-cache"))
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# the tiny U-Net packages (session fixtures) for every test folder
from tests.tiny_packages import predictor2d, predictor3d, tiny_unet2d, tiny_unet3d  # noqa: E402, F401
