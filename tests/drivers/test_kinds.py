"""Output kinds: chosen from the package's config.emzoo, registered by name, never imported by the driver."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from emzoo.drivers import kinds
from emzoo.errors import PackageError
from emzoo.package.spec import Axis, ModelSpec, TensorSpec


def _spec(emzoo: dict) -> ModelSpec:
    axes = (
        Axis("batch", "batch"),
        Axis("channel", "channel", size=1),
        Axis("y", "space"),
        Axis("x", "space"),
    )
    density = TensorSpec("density", axes)
    return ModelSpec(
        "m", "", "0.5.4", inputs=(TensorSpec("raw", axes),), outputs=(density,), weights={}, emzoo=emzoo
    )


def test_plain_packages_are_images():
    assert kinds.output_kind(_spec({})).name == "image"
    assert kinds.output_kind(_spec({"training": {"mean": 1}})).name == "image"


def test_a_counting_section_selects_the_counting_kind():
    kind = kinds.output_kind(_spec({"counting": {"output": "density"}}))
    assert kind.name == "counting" and kind.streams is False
    assert kind.extra_paths(Path("out/a")) == {"centres": Path("out/a_centres.csv")}


def test_an_unknown_kind_is_a_package_error_naming_the_field():
    with pytest.raises(PackageError, match=r"config.emzoo.output_kind 'sizes' .* not known"):
        kinds.output_kind(_spec({"output_kind": "sizes"}))


def test_registered_kinds_are_selected_by_name():
    class Sizes(kinds.ImageKind):
        name = "sizes"

    kinds.register_output_kind("sizes", Sizes)
    assert "sizes" in kinds.list_output_kinds()
    assert kinds.output_kind(_spec({"output_kind": "sizes"})).name == "sizes"


def test_the_file_driver_does_not_import_the_counting_modules():
    code = "import sys, emzoo.drivers.files; print(sorted(m for m in sys.modules if 'emzoo.tasks.' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # the input check (ood) is a plain function of the driver; counting arrives only through the registry
    assert "emzoo.tasks.counting" not in out.stdout and "emzoo.tasks.counting_files" not in out.stdout
