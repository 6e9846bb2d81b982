"""``emzoo predict`` drops the batch axis and a channel axis of length one; ``--keep-axes`` writes each
output with every axis its package declares but batch (a generated package whose output is
``batch, channel(1), z(1), y, x``)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from emzoo.cli import main


@pytest.fixture(scope="module")
def extra_z():
    pytest.importorskip("torch", reason="building the package needs torch")
    from tests.conformance.generate import package

    return package("g05-param-extra-z")


@pytest.mark.parametrize("stream", [False, True])
def test_keep_axes_writes_the_declared_layout(extra_z, tmp_path, stream):
    image = np.random.default_rng(0).integers(0, 255, (96, 128)).astype(np.uint8)
    np.save(tmp_path / "img.npy", image)
    shapes = {}
    for keep in (False, True):
        out = tmp_path / f"keep{keep}{stream}"
        args = [
            "predict",
            str(extra_z),
            str(tmp_path / "img.npy"),
            "-o",
            str(out),
            "--output-format",
            "npy",
            "-q",
        ]
        args += ["--keep-axes"] * keep + (["--stream", "--chunk-size", "48"] if stream else [])
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        shapes[keep] = np.load(out / "img_out.npy").shape
    assert shapes == {False: (1, 96, 128), True: (1, 1, 96, 128)}


def test_the_default_is_documented():
    text = " ".join(CliRunner().invoke(main, ["predict", "-h"]).output.split())
    assert "--keep-axes" in text and "without a channel axis of length 1" in text
