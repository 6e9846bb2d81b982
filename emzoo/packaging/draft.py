"""The middle of a build (steps 3-4 of :mod:`emzoo.packaging.build`): the state of one build
(:class:`Job`), its test tensors, the package description, and the draft package run with **emzoo's
runtime** for every weight format against a plain forward pass of the pre-processed test input
(what ``bioimageio test`` expects: no padding, no cropping).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.package.spec import Tolerance
from emzoo.packaging import descr as D
from emzoo.packaging.covers import render_cover
from emzoo.packaging.export import ExportedWeights, PackagingError
from emzoo.packaging.geometry import Geometry
from emzoo.packaging.info import PackagingInfo, PredictFn, TensorInfo
from emzoo.packaging.metadata import authors, cite_entries
from emzoo.packaging.tensors import output_atol, sample_in_input_axes, squeezed

RUNTIME_ORDER = ("onnx", "torchscript", "pytorch_state_dict")  # the first present makes the test output


@dataclass
class Job:
    """One build: the inputs and what the steps have produced so far."""

    network: Any
    info: PackagingInfo
    raw: np.ndarray  # the sample, with the input's axes
    stage: Path
    geometry: Geometry
    formats: list[str]
    reproducibility: Tolerance  # the promise (BuildOptions.reproducibility)
    version: str  # the package version
    crop: np.ndarray = field(init=False)
    test_input: np.ndarray = field(init=False)
    outs: list[np.ndarray] = field(init=False)  # the network's raw outputs on the test input
    plain: dict[str, np.ndarray] = field(init=False)  # ... post-processed

    @property
    def tin(self) -> TensorInfo:
        return self.info.inputs[0]

    def path(self, name: str) -> Path:
        return self.stage / name


def package_tolerances(job: Job) -> list[Tolerance]:
    """The package's promise per output: ``job.reproducibility`` with an atol that bioimageio.spec
    accepts for this test output (see :func:`~emzoo.packaging.tensors.output_atol`)."""
    rep = job.reproducibility
    return [
        replace(rep, atol=output_atol(job.plain[t.id], rep), output_ids=(t.id,)) for t in job.info.outputs
    ]


def save_plain_outputs(job: Job) -> dict[str, Path]:
    """The draft's test tensors: the raw crop and model(pre-processed crop), post-processed."""
    import tifffile

    np.save(job.path("test_input.npy"), job.test_input)
    tifffile.imwrite(job.path("sample_input.tif"), squeezed(job.crop))
    paths = {}
    for t in job.info.outputs:
        paths[t.id] = job.path(f"test_output_{t.id}.npy")
        np.save(paths[t.id], job.plain[t.id])
    # a cover of its own, or bioimageio.spec renders one into a temporary folder it never removes
    first = job.info.outputs[0]
    render_cover(job.path("draft_cover.png"), job.crop, job.tin.axes, job.plain[first.id][0], first.axes)
    return paths


def describe(
    job: Job,
    exported: ExportedWeights,
    tolerances: Sequence[Tolerance],
    test_outputs: Mapping[str, Path],
    sample_outputs: Mapping[str, Path] | None = None,
    **extra: Any,
):
    """The ``ModelDescr`` (a draft without ``extra``: tensors, weights and tolerances only)."""
    from bioimageio.spec.model import v0_5

    info, sample_outputs = job.info, sample_outputs or {}
    extra.setdefault(
        "config",
        v0_5.Config(
            bioimageio=v0_5.BioimageioConfig(reproducibility_tolerance=D.tolerance_descrs(tolerances))
        ),
    )
    if not extra.get("covers"):
        from bioimageio.spec.common import FileDescr

        extra["covers"] = [FileDescr(source=job.path("draft_cover.png"))]
    try:
        return v0_5.ModelDescr(
            name=info.name,
            description=info.description,
            authors=authors(info.authors),
            cite=cite_entries(info.cite),
            license=info.license,
            tags=sorted({*info.tags, "emzoo", "electron-microscopy"}),
            version=job.version,
            inputs=[
                D.input_descr(
                    job.tin, info, job.geometry, job.path("test_input.npy"), job.path("sample_input.tif")
                )
            ],
            outputs=[
                D.output_descr(
                    t, info, job.geometry, job.outs[i].shape, test_outputs[t.id], sample_outputs.get(t.id)
                )
                for i, t in enumerate(info.outputs)
            ],
            weights=D.weights_descr(exported, [v0_5.Author(name=a["name"]) for a in info.authors[:1]]),
            **extra,
        )
    except PackagingError:
        raise
    except Exception as e:  # a pydantic ValidationError: name the fields
        raise PackagingError(f"bioimageio.spec rejects the description: {D.short_error(e)}") from e


def save_draft(draft, folder: Path) -> Path:
    from bioimageio.spec import save_bioimageio_package_as_folder

    return Path(save_bioimageio_package_as_folder(draft, output_path=folder))


def runtime_test_outputs(
    job: Job, draft_dir: Path, tolerances: Sequence[Tolerance]
) -> tuple[str, dict[str, Path], dict[str, Path]]:
    """emzoo's runtime on the test input, every weight format, against the plain forward pass; the
    first format's outputs become the test (``.npy``) and sample (``.tif``) outputs."""
    import tifffile

    from emzoo.package.load import open_model
    from emzoo.runtime.predictor import Predictor
    from emzoo.runtime.settings import TileSettings

    # the draft's code is emzoo's copy of the caller's own architecture, which the export has run
    package = open_model(draft_dir, use_cache=False, trust_package_code=True)
    runtime: dict[str, dict[str, np.ndarray]] = {}
    for fmt in [f for f in RUNTIME_ORDER if f in job.formats]:
        # the network's own outputs, as the test tensors are: no test-time augmentation
        plain = Predictor(package, weight_format=fmt, device="cpu", settings=TileSettings(tta=False))
        runtime[fmt] = plain.run({job.tin.id: job.test_input})
        for t, tol in zip(job.info.outputs, tolerances, strict=True):
            got, want = runtime[fmt][t.id], job.plain[t.id]
            result = tol.compare(got, want)
            if not result.ok:
                raise PackagingError(
                    f"emzoo's runtime ({fmt} weights) gives output {t.id!r} of shape {got.shape} with max "
                    f"|difference| {result.max_abs_diff:.3g} ({result.mismatched} elements beyond atol "
                    f"{tol.atol:g} + rtol {tol.rtol:g}) from a plain forward pass of the pre-processed test "
                    f"input {want.shape}: the package would fail its own test; check the processing steps "
                    "and that the network keeps the input size"
                )
    reference = next(iter(runtime))
    test_outputs, sample_outputs = {}, {}
    for t in job.info.outputs:
        test_outputs[t.id] = job.path(f"test_output_{t.id}.npy")
        np.save(test_outputs[t.id], runtime[reference][t.id].astype(np.float32))
        sample_outputs[t.id] = job.path(f"sample_output_{t.id}.tif")
        tifffile.imwrite(sample_outputs[t.id], squeezed(runtime[reference][t.id][0]))
    return reference, test_outputs, sample_outputs


def predict_fn(draft: Path, fmt: str, t: TensorInfo) -> PredictFn:
    """``predict(image with the input's axes, tta=None) -> {output id: array with the output's axes}``;
    ``tta`` True/False switches test-time augmentation on/off, None runs as the package asks."""
    from emzoo.runtime.predictor import Predictor
    from emzoo.runtime.settings import TileSettings

    predictors: dict[bool | None, Predictor] = {}

    def predict(image: np.ndarray, tta: bool | None = None) -> dict[str, np.ndarray]:
        if tta not in predictors:
            settings = TileSettings(tta=tta)
            predictors[tta] = Predictor(
                draft, weight_format=fmt, trust_package_code=True, device="cpu", settings=settings
            )
        outs = predictors[tta].run({t.id: sample_in_input_axes(image, t)[None]})
        return {k: v[0] for k, v in outs.items()}

    return predict
