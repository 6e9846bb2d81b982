"""Spec-0.4 descriptions are read as 0.4, as bioimageio.core runs them: packages whose conversion to
0.5 fails (or loses a field) run in emzoo as they do in bioimageio.core (generated packages of the
conformance matrix, tests/conformance/matrix.py)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from emzoo.cli import main
from emzoo.package.load import open_model

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def package():
    pytest.importorskip("torch", reason="building the 0.4 packages needs torch")
    from tests.conformance.generate import package

    return package


def test_a_fixed_size_output_with_a_halo_is_read_and_reproduces(package):
    """bioimageio.spec: "output axis with halo and fixed size not allowed"; bioimageio.core runs it."""
    from emzoo.checks.testing import test_package

    folder = package("g04-fixed-output-halo")
    (out,) = open_model(folder, use_cache=False).spec.outputs
    assert [(a.size, a.halo) for a in out.axes if a.is_spatial] == [(32, 4), (32, 4)]
    results = test_package(str(folder), run_bioimageio=False)
    assert all(r.passed for r in results), [r.message for r in results]


def test_npy_sample_inputs_do_not_stop_it(package):
    """bioimageio.spec's conversion reads ``sample_inputs`` as images: "Could not find a backend"."""
    folder = package("g04-npy-samples")
    result = CliRunner().invoke(main, ["validate", str(folder)])
    assert result.exit_code == 0, result.output
    assert "format 0.4.10" in result.output


def test_scale_range_keeps_its_reference_tensor(package):
    """The conversion to 0.5 drops it: the input was normalised with its own percentiles."""
    spec = open_model(package("p04-scale-range-ref"), use_cache=False).spec
    (op,) = [op for op in spec.input("a").processing if op.id == "scale_range"]
    assert op.kwargs["reference_tensor"] == "b"


def test_tensors_get_the_casts_and_the_tolerance_of_bioimageio_core(package):
    spec = open_model(package("g04-param-halo"), use_cache=False).spec
    ops = [(op.id, op.kwargs.get("dtype")) for op in spec.inputs[0].processing]
    assert ops == [("ensure_dtype", "uint8"), ("zero_mean_unit_variance", None), ("ensure_dtype", "float32")]
    assert [op.id for op in spec.outputs[0].processing] == ["ensure_dtype"]  # first tensor, no ops
    tolerance = spec.tolerance("onnx", "out")
    assert (tolerance.atol, tolerance.rtol, tolerance.mismatched_per_million) == (1e-3, 1e-3, 0)
