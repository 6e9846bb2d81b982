"""Differential conformance: every generated package (tests/conformance/matrix.py) through
bioimageio.core and through emzoo, on a seeded image several times larger than its test tensor.

* ``emzoo test`` passes exactly where bioimageio.core's ``test_model`` passes (both fail for the
  packages with wrong test outputs; where bioimageio.core 0.11 cannot run a package at all,
  ``Case.core_fails`` says why and emzoo must pass).
* emzoo's predictions (whole image, tiled, ``emzoo predict`` on files, streamed chunk by chunk)
  equal bioimageio.core's (whole sample, blockwise, whole-sample calls on windows) within the
  package's tolerance, away from the image border (see the border convention in compare.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conformance import compare, core
from tests.conformance.generate import image_shape, sample_inputs
from tests.conformance.matrix import BLOCK, CASES, Case

pytestmark = pytest.mark.filterwarnings("ignore")


def _descr(rdf):
    from bioimageio.spec import load_description

    return load_description(rdf, perform_io_checks=False)


def _reference_post(case: Case) -> bool:
    return case.core_fails is not None


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_emzoo_test_passes_where_bioimageio_test_passes(case, generated):
    from emzoo.checks.core import run_core_test
    from emzoo.checks.testing import test_package

    rdf = generated / case.name / "rdf.yaml"
    ours = test_package(str(rdf), run_bioimageio=False, trust_package_code=True)
    assert all(r.passed is not None for r in ours), [r.message for r in ours]
    emzoo_ok = all(r.passed for r in ours)
    theirs = {w: run_core_test(rdf, w, code_trusted=True) for w in case.weights}
    core_ok = all(ok for ok, _ in theirs.values())
    detail = {"emzoo": [r.message for r in ours if not r.passed], "bioimageio.core": theirs}
    assert core_ok == case.core_passes, detail
    assert emzoo_ok == case.expect_pass, detail
    if case.core_fails is None:
        assert emzoo_ok == core_ok, detail


def _compare(case: Case, predictor, ours: dict, reference: dict, what: str, region=None) -> list[str]:
    """Problems of ``ours`` against ``reference`` (both model axes), interior only."""
    problems = []
    for o in case.outputs:
        a, b = np.asarray(ours[o.id]), np.asarray(reference[o.id])
        if region is not None:
            a = a[region(o)]
        if a.shape != b.shape:
            problems.append(f"{what}: {o.id} has shape {a.shape}, bioimageio.core {b.shape}")
            continue
        tol = predictor.spec.tolerance(predictor.weights.format, o.id)
        result = tol.compare(compare.interior(case, o, a), compare.interior(case, o, b))
        if not result.ok:
            problems.append(f"{what}: {o.id}: {result.detail}")
    return problems


def _core_references(case: Case, descr, x: dict) -> dict[str, dict]:
    refs = {}
    why = compare.references(case)
    wf, post = case.weights[0], _reference_post(case)
    if why["whole"] is None:
        refs["whole"] = core.predict(descr, x, weight_format=wf, mode="whole", reference_post=post)
    if why["blocks"] is None:
        block = compare.block_shape(case)
        refs["blocks"] = core.predict(
            descr, x, weight_format=wf, mode="blocks", block=block, reference_post=post
        )
    return refs


def _window_problems(case: Case, descr, predictor, x: dict, ours: dict, what: str) -> list[str]:
    """Fixed-size inputs: bioimageio.core on test-size windows of the image against emzoo's
    prediction of the whole image, over each window's interior."""
    problems = []
    for window in compare.windows(case, image_shape(case)):
        index = (slice(None), slice(None), *window)
        part = {k: v[index] for k, v in x.items()}
        ref = core.predict(
            descr, part, weight_format=case.weights[0], mode="whole", reference_post=_reference_post(case)
        )

        def region(o, window=window):
            extra = (slice(None),) if o.geometry == "unsqueeze" else ()
            r = compare.ratio(o)
            scaled = (slice(round(s.start * r), round(s.stop * r)) for s in window)
            return (slice(None), slice(None), *extra, *scaled)

        problems += _compare(case, predictor, ours, ref, f"{what} {window}", region)
    return problems


def _cli(case: Case, rdf, x: dict, folder, *extra: str) -> dict[str, np.ndarray]:
    """``emzoo predict --keep-axes`` on .npy files; the outputs with their batch axis back."""
    from emzoo.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for tid, data in x.items():
        paths[tid] = folder / f"{tid}.npy"
        np.save(paths[tid], data)
    args = ["predict", str(rdf), "-o", str(folder / "out"), "--output-format", "npy", "--keep-axes", "-q"]
    if len(x) == 1:
        args.append(str(next(iter(paths.values()))))
    else:
        args += [a for tid, p in paths.items() for a in ("--input", f"{tid}={p}")]
    result = CliRunner().invoke(main, [*args, *extra])
    assert result.exit_code == 0, result.output
    stem = paths[case.inputs[0].id].stem
    return {o.id: np.load(folder / "out" / f"{stem}_{o.id}.npy")[None] for o in case.outputs}


def streamable(case: Case) -> bool:
    """Streamed chunk by chunk (one input, no statistics of an output, no per-slice statistics along
    a cut axis, outputs not offset from the input)."""
    own = {"zero_mean_unit_variance", "scale_mean_variance"}
    for o in case.outputs:
        for op in o.post:
            kw, name = op.get("kwargs") or {}, op.get("id") or op.get("name")
            if name in own or (name == "scale_range" and not kw.get("reference_tensor")):
                return False
            if name == "clip" and ("min_percentile" in kw or "max_percentile" in kw):
                return False
        if o.geometry == "crop2" or o.fixed or o.channel_type == "index":  # OME-Zarr has no index axis
            return False
    per_slice = any(
        isinstance((op.get("kwargs") or {}).get("axes"), str) and "z" not in op["kwargs"]["axes"]
        for t in case.inputs
        for op in t.pre
    )
    return len(case.inputs) == 1 and not (case.dims == 3 and per_slice)


@pytest.mark.parametrize("case", [c for c in CASES if c.expect_pass], ids=lambda c: c.name)
def test_emzoo_predicts_what_bioimageio_core_predicts(case, generated, tmp_path):
    from emzoo.errors import InputError
    from emzoo.runtime.predictor import Predictor
    from emzoo.runtime.settings import TileSettings

    rdf = generated / case.name / "rdf.yaml"
    descr = _descr(rdf)
    x = sample_inputs(case, image_shape(case), "image")
    references = _core_references(case, descr, x)
    problems: list[str] = []
    first = Predictor(str(rdf), weight_format=case.weights[0], device="cpu")
    if any(o.fixed for o in case.outputs):  # bioimageio.core cannot tile these either
        with pytest.raises(InputError, match="takes exactly"):
            first.run(x)
        window = compare.windows(case, image_shape(case))[1]
        part = {k: v[(slice(None), slice(None), *window)] for k, v in x.items()}
        ref = core.predict(descr, part, weight_format=case.weights[0], mode="whole")
        assert not _compare(case, first, first.run(part), ref, "emzoo whole")
        return
    runs = {}
    for fmt in case.weights:
        p = first if fmt == case.weights[0] else Predictor(first.package, weight_format=fmt, device="cpu")
        runs[f"emzoo whole ({fmt})"] = (p, p.run(x))
        assert (p.last_plan is None or p.last_plan.n_tiles == 1) != case.fixed
    tiled = Predictor(
        first.package,
        weight_format=case.weights[0],
        device="cpu",
        settings=None if case.fixed else TileSettings(tile=(BLOCK[case.dims],)),
    )
    runs["emzoo tiled"] = (tiled, tiled.run(x))
    assert tiled.last_plan is not None and tiled.last_plan.n_tiles > 1
    runs["emzoo predict"] = (first, _cli(case, rdf, x, tmp_path / "files"))
    if streamable(case):
        chunk = str(BLOCK[case.dims])
        runs["emzoo predict --stream"] = (
            first,
            _cli(case, rdf, x, tmp_path / "stream", "--stream", "--chunk-size", chunk),
        )
    assert references or case.fixed, compare.references(case)
    for what, (p, ours) in runs.items():
        for kind, ref in references.items():
            problems += _compare(case, p, ours, ref, f"{what} vs bioimageio.core {kind}")
        if case.fixed:
            problems += _window_problems(case, descr, p, x, ours, what)
    assert not problems, "\n".join(problems)
