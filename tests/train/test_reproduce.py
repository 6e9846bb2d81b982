"""The card's "Reproduce this model" (emzoo.train.run.reproduce_section): the package command
repeats a version that is not the default, and the shared data is written as a reader of the
repository writes it."""

from __future__ import annotations

from pathlib import Path

from emzoo.train.discovery import get_usecase
from emzoo.train.run import reproduce_section


def test_the_package_command_repeats_a_version_that_is_not_the_default(tmp_path):
    uc = get_usecase("particle_detection")
    config = {"params": {"seed": 0}, "device": "cpu"}
    data = tmp_path / "shared" / "data" / "stem_nanoparticles"
    section = reproduce_section(uc, data, Path("runs/pd"), "zoo_models/x", config, "0.2.0")
    assert "emzoo package runs/pd -o zoo_models/x --model-version 0.2.0\n" in section
    assert "--data ../shared/data/stem_nanoparticles " in section
    assert "--model-version" not in reproduce_section(uc, data, Path("runs/pd"), "zoo_models/x", config, None)
