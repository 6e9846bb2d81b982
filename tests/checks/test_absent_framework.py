"""``emzoo test`` after the plain install (onnxruntime, no torch): weights whose framework is absent
are reported as skipped with the install command and do not fail the run, unless they were asked
for with ``--weights``. Simulated in a subprocess where ``import torch`` raises ImportError."""

from __future__ import annotations

import subprocess
import sys

import pytest

NO_TORCH = (
    "import sys; sys.modules['torch'] = None; "  # import torch -> ImportError
    "from emzoo.cli import main; main(sys.argv[1:])"
)


@pytest.fixture(scope="module")
def onnx_and_torchscript():
    pytest.importorskip("torch", reason="building the package needs torch")
    from tests.conformance.generate import package

    return package("g05-param-halo")  # onnx and torchscript weights


def _emzoo_test(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NO_TORCH, "test", "--no-bioimageio", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_weights_without_their_framework_are_skipped(onnx_and_torchscript):
    done = _emzoo_test(str(onnx_and_torchscript))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    skipped = [line for line in lines if "torchscript" in line]
    reason = "skipped (pip install torch, or the [train] extra of emzoo)"
    assert skipped and all(reason in line for line in skipped), done.stdout
    assert any("onnx" in line and " pass " in line for line in lines), done.stdout


def test_asked_for_weights_without_their_framework_fail(onnx_and_torchscript):
    done = _emzoo_test(str(onnx_and_torchscript), "--weights", "torchscript")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "PyTorch, which is not installed" in done.stdout
