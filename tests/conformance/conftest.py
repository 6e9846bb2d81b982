"""The generated packages, built once per generator version into a cache folder (see
:func:`tests.conformance.generate.cache_root`) and shared by every later run."""

from __future__ import annotations

import importlib.util
import os

import pytest

# the architecture source of the packages imports torch (collected for doctests otherwise)
collect_ignore = [] if importlib.util.find_spec("torch") else ["nets.py"]


@pytest.fixture(scope="session")
def generated():
    """The folder of the generated packages (built where missing: about a minute on two cores)."""
    pytest.importorskip("torch", reason="building the conformance packages needs torch")
    pytest.importorskip("onnxruntime", reason="the conformance packages have onnx weights")
    from tests.conformance.generate import generate

    # state-dict packages run their own architecture file: these are ours
    os.environ["EMZOO_TRUST_PACKAGE_CODE"] = "1"
    os.environ.setdefault("TQDM_DISABLE", "1")  # bioimageio.core's blockwise progress bars
    return generate()
