"""Build a self-validating bioimage.io package (spec 0.5) from a trained PyTorch module.

The steps, in order; any failure raises :class:`PackagingError` and leaves no package behind (all
work happens in a staging folder and a hidden partial file, renamed into place at the very end):

1. check the metadata (:mod:`emzoo.packaging.metadata`), before any slow work;
2. measure the network: down-sampling step, receptive field -> halo and minimum size;
3. crop a real sample to a valid test size, pre-process it with emzoo's ops, export ONNX,
   TorchScript and the state dict, and compare every format with the module on it;
4. write a draft package, run it with **emzoo's runtime** for every weight format and compare with
   a plain forward pass of the pre-processed test input (what ``bioimageio test`` expects: no
   padding, no cropping); the runtime's output becomes the test output;
5. run the use case's ``evaluate`` through the draft package; render covers and the model card;
6. assemble the final ``ModelDescr``, save it (zip or folder) with bioimageio.spec, read it back,
   run ``bioimageio.core.test_model`` for every weight format, and move it into place.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from emzoo import __version__
from emzoo.packaging import descr as D
from emzoo.packaging.card import CardFacts, axes_text, data_card, ops_text, render_card
from emzoo.packaging.covers import render_cover
from emzoo.packaging.export import (
    ALL_FORMATS,
    Architecture,
    ExportedWeights,
    PackagingError,
    Tolerance,
    export_weights,
    forward,
    frozen_copy,
)
from emzoo.packaging.geometry import Geometry, measure
from emzoo.packaging.metadata import authors, check_info, cite_entries, is_license
from emzoo.packaging.save import save_and_check
from emzoo.packaging.tensors import (
    ReproducibilityTolerance,
    check_output_shapes,
    compare,
    crop_for_test,
    intensity_stats,
    jsonable,
    output_atol,
    sample_in_input_axes,
    squeezed,
)
from emzoo.train.usecase import PackagingInfo, PredictFn, TensorInfo

log = logging.getLogger(__name__)

EvaluateFn = Callable[[PredictFn], Mapping[str, Any]]
RUNTIME_ORDER = ("onnx", "torchscript", "pytorch_state_dict")  # the first present makes the test output

__all__ = ["BuildOptions", "ReproducibilityTolerance", "package_module"]


@dataclass(frozen=True)
class BuildOptions:
    """How to build; the defaults suit small EM networks on a CPU."""

    weight_formats: Sequence[str] = ALL_FORMATS
    step: int | None = None  # input size step (down-sampling factor); measured when None
    halo: int | None = None  # output halo in px; the measured receptive field, rounded up, when None
    test_size: int = 256  # largest test-tensor edge (px); cropped from the sample
    export_tolerance: Tolerance = field(default_factory=Tolerance)
    reproducibility: ReproducibilityTolerance = field(default_factory=ReproducibilityTolerance)
    opset: int = 17
    torchscript: str = "auto"  # "script", "trace", or "auto" (script, else trace)
    version: str = "0.1.0"
    test_with_bioimageio: bool = True  # bioimageio.core.test_model per weight format before writing
    overwrite: bool = False


@dataclass
class _Job:
    """One build: the inputs and what the steps have produced so far."""

    network: Any
    info: PackagingInfo
    raw: np.ndarray  # the sample, with the input's axes
    stage: Path
    geometry: Geometry
    formats: list[str]
    options: BuildOptions
    crop: np.ndarray = field(init=False)
    test_input: np.ndarray = field(init=False)
    outs: list[np.ndarray] = field(init=False)  # the network's raw outputs on the test input
    plain: dict[str, np.ndarray] = field(init=False)  # ... post-processed

    @property
    def tin(self) -> TensorInfo:
        return self.info.inputs[0]

    def path(self, name: str) -> Path:
        return self.stage / name


def package_module(
    module,
    info: PackagingInfo,
    sample: np.ndarray,
    output: str | Path,
    *,
    architecture: Architecture | tuple[Path, str, Mapping[str, Any]] | None = None,
    evaluate: EvaluateFn | None = None,
    training_stats: Mapping[str, Any] | None = None,
    training_images: Iterable[np.ndarray] | None = None,
    training: Mapping[str, Any] | None = None,
    extra_config: Mapping[str, Any] | None = None,
    options: BuildOptions | None = None,
) -> Path:
    """Package ``module`` as a bioimage.io model (spec 0.5): a ``.zip``, or a folder for other names.

    Parameters
    ----------
    module
        The trained ``torch.nn.Module`` (left unchanged; a frozen CPU copy is exported).
    info
        Name, tensors, authors, license, citations, pixel size, training data... (:class:`PackagingInfo`).
    sample
        A real raw image with the input's axes (``info.inputs[0].axes``; a single-channel image may
        omit ``c``): test tensors, sample tensors and covers come from it.
    output
        ``model.zip``, or a folder such as ``zoo_models/<name>`` (written with ``rdf.yaml``).
    architecture
        ``(self-contained source file, callable name, kwargs)`` for the pytorch_state_dict weights;
        without it the package has onnx and torchscript weights only.
    evaluate
        ``evaluate(predict) -> {"dataset_role", "sample_count", "metrics", "baseline", ...}``. Its
        ``predict(image with the input's axes) -> {output id: array with the output's axes}`` runs
        the *packaged* model through emzoo's runtime, so the metrics are those of the package.
    training_stats, training_images
        Intensity statistics of the raw training images (see :func:`intensity_stats`), or the images to
        compute them from; without either they come from the sample (and say so).
    training
        Training settings for the card and ``config.bioimageio.training`` (epochs, batch_size, lr, ...).
    extra_config
        More keys for ``config.emzoo`` (use case name, parameters...).

    Examples
    --------
    >>> arch = (Path("unet.py"), "UNet", {"depth": 2})
    >>> package_module(net, info, image, "model.zip", architecture=arch)  # doctest: +SKIP
    """
    options = options or BuildOptions()
    output = Path(output)
    if output.exists() and not options.overwrite:
        raise PackagingError(f"{output} already exists: choose another output or overwrite it (--overwrite)")
    check_info(info)
    for t, kind in [(info.inputs[0], "pre"), *((o, "post") for o in info.outputs)]:
        D.processing_descrs(D.with_float32_end(t.processing), kind)  # fails early on an invalid step
    formats = [f for f in ALL_FORMATS if f in options.weight_formats]
    if isinstance(architecture, tuple):
        architecture = Architecture(Path(architecture[0]), architecture[1], dict(architecture[2]))
    if architecture is None and "pytorch_state_dict" in formats:
        log.warning("no architecture source given: the package gets no pytorch_state_dict weights")
        formats.remove("pytorch_state_dict")
    if not formats:
        raise PackagingError(f"no weight formats to write: choose from {', '.join(ALL_FORMATS)}")
    tin = info.inputs[0]
    raw = sample_in_input_axes(sample, tin)
    network = frozen_copy(module)
    geometry = measure(
        network,
        channels=len(tin.channel_names),
        spatial=sum(a in "zyx" for a in tin.axes),
        spatial_outputs=[i for i, t in enumerate(info.outputs) if any(a in "zyx" for a in t.axes)],
        step=options.step,
        halo=options.halo,
    )
    log.info("geometry: %s", geometry)
    output.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix="emzoo-package-"))
    try:
        job = _Job(network, info, raw, stage, geometry, formats, options)
        exported = _export(job, architecture)
        tolerances = _tolerances(job)
        draft = _describe(job, exported, tolerances, _save_plain_outputs(job))
        draft_dir = _save_draft(draft, job.path("draft"))
        reference, test_outputs, sample_outputs = _runtime_test_outputs(job, draft_dir, tolerances)
        predict = _predict_fn(draft_dir, reference, tin)
        covers = _covers(job, predict)
        attachments = []
        evaluation = None
        if evaluate is not None:
            evaluation = _evaluate(evaluate, predict)
            job.path("evaluation.json").write_text(json.dumps(jsonable(evaluation), indent=1))
            attachments.append(job.path("evaluation.json"))
        stats = _statistics(raw, training_stats, training_images)
        training = dict(training or {})
        _write_cards(job, output.name, stats, evaluation, training)
        config = D.config_descr(
            tolerances=tolerances,
            evaluations=[D.evaluation_descr(evaluation, info)] if evaluation else [],
            info=info,
            training=training,
            parameter_count=int(sum(p.numel() for p in network.parameters())),
            architecture_type=type(network).__name__,
            emzoo=_emzoo_config(job, exported, stats, evaluation, extra_config or {}),
        )
        from bioimageio.spec.common import FileDescr

        final = _describe(
            job,
            exported,
            tolerances,
            test_outputs,
            sample_outputs,
            documentation=FileDescr(source=job.path("README.md")),
            covers=[FileDescr(source=c) for c in covers],
            attachments=[FileDescr(source=p) for p in attachments],
            training_data=_training_data(info, job.path("training_data.md")),
            config=config,
        )
        save_and_check(final, output, formats, test_with_bioimageio=options.test_with_bioimageio)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    log.info("wrote %s", output)
    return output


# -- steps ------------------------------------------------------------------------------------------


def _export(job: _Job, architecture: Architecture | None) -> ExportedWeights:
    """Test crop -> pre-processed network input -> exports, checked on it and on a batch of two
    minimum-size crops (other batch and spatial sizes than the export's)."""
    from emzoo.runtime import processing
    from emzoo.runtime.spec import Op

    tin, info = job.tin, job.info
    job.crop = crop_for_test(job.raw, tin, job.geometry, job.options.test_size)
    job.test_input = np.ascontiguousarray(job.crop[None].astype(np.float32))
    pre = [Op(op["id"], op["kwargs"]) for op in D.with_float32_end(tin.processing)]
    x = processing.apply(pre, processing.Tensor(job.test_input, D.axis_ids(tin.axes))).astype(np.float32)
    job.outs = forward(job.network, [x])
    check_output_shapes(job.outs, info, x)
    job.plain = {}
    for o, t in zip(job.outs, info.outputs, strict=False):
        post = [Op(op["id"], op["kwargs"]) for op in D.with_float32_end(t.processing)]
        job.plain[t.id] = processing.apply(post, processing.Tensor(o, D.axis_ids(t.axes))).astype(np.float32)
    small = tuple(slice(0, job.geometry.min_size) if a in "zyx" else slice(None) for a in tin.axes)
    second = np.concatenate([x[(slice(None), *small)]] * 2)

    def dynamic(t: TensorInfo) -> list[int]:
        return [0, *(1 + i for i, a in enumerate(t.axes) if a in "zyx")]

    return export_weights(
        job.network,
        x,
        job.path("weights"),
        architecture=architecture,
        formats=job.formats,
        input_names=(tin.id,),
        output_names=tuple(t.id for t in info.outputs),
        dynamic_axes={t.id: dynamic(t) for t in (tin, *info.outputs)},
        opset=job.options.opset,
        torchscript=job.options.torchscript,  # type: ignore[arg-type]
        tolerance=job.options.export_tolerance,
        check_inputs=[[second]],
    )


def _tolerances(job: _Job) -> list[Any]:
    from bioimageio.spec.model import v0_5

    rep = job.options.reproducibility
    return [
        v0_5.ReproducibilityTolerance(
            relative_tolerance=rep.rtol,
            absolute_tolerance=output_atol(job.plain[t.id], rep),
            mismatched_elements_per_million=rep.ppm,
            output_ids=[t.id],
        )
        for t in job.info.outputs
    ]


def _save_plain_outputs(job: _Job) -> dict[str, Path]:
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


def _describe(
    job: _Job,
    exported: ExportedWeights,
    tolerances: list[Any],
    test_outputs: Mapping[str, Path],
    sample_outputs: Mapping[str, Path] | None = None,
    **extra: Any,
):
    """The ``ModelDescr`` (a draft without ``extra``: tensors, weights and tolerances only)."""
    from bioimageio.spec.model import v0_5

    info, sample_outputs = job.info, sample_outputs or {}
    extra.setdefault(
        "config", v0_5.Config(bioimageio=v0_5.BioimageioConfig(reproducibility_tolerance=tolerances))
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
            version=job.options.version,
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


def _save_draft(draft, folder: Path) -> Path:
    from bioimageio.spec import save_bioimageio_package_as_folder

    return Path(save_bioimageio_package_as_folder(draft, output_path=folder))


def _runtime_test_outputs(
    job: _Job, draft_dir: Path, tolerances: list[Any]
) -> tuple[str, dict[str, Path], dict[str, Path]]:
    """emzoo's runtime on the test input, every weight format, against the plain forward pass; the
    first format's outputs become the test (``.npy``) and sample (``.tif``) outputs."""
    import tifffile

    from emzoo.runtime.package import open_model
    from emzoo.runtime.predictor import Predictor

    package = open_model(draft_dir, use_cache=False)
    rep = job.options.reproducibility
    runtime: dict[str, dict[str, np.ndarray]] = {}
    for fmt in [f for f in RUNTIME_ORDER if f in job.formats]:
        runtime[fmt] = Predictor(package, weight_format=fmt, device="cpu").run({job.tin.id: job.test_input})
        for t, tol in zip(job.info.outputs, tolerances, strict=True):
            got, want = runtime[fmt][t.id], job.plain[t.id]
            ok, diff, bad = compare(got, want, rep, tol.absolute_tolerance)
            if not ok:
                raise PackagingError(
                    f"emzoo's runtime ({fmt} weights) gives output {t.id!r} of shape {got.shape} with max "
                    f"|difference| {diff:.3g} ({bad} elements beyond atol {tol.absolute_tolerance:g} + rtol "
                    f"{tol.relative_tolerance:g}) from a plain forward pass of the pre-processed test input "
                    f"{want.shape}: the package would fail its own test; check the processing steps and "
                    "that the network keeps the input size"
                )
    reference = next(iter(runtime))
    test_outputs, sample_outputs = {}, {}
    for t in job.info.outputs:
        test_outputs[t.id] = job.path(f"test_output_{t.id}.npy")
        np.save(test_outputs[t.id], runtime[reference][t.id].astype(np.float32))
        sample_outputs[t.id] = job.path(f"sample_output_{t.id}.tif")
        tifffile.imwrite(sample_outputs[t.id], squeezed(runtime[reference][t.id][0]))
    return reference, test_outputs, sample_outputs


def _predict_fn(draft: Path, fmt: str, t: TensorInfo) -> PredictFn:
    """``predict(image with the input's axes) -> {output id: array with the output's axes}``."""
    from emzoo.runtime.predictor import Predictor

    predictor = Predictor(draft, weight_format=fmt, device="cpu")

    def predict(image: np.ndarray) -> dict[str, np.ndarray]:
        outs = predictor.run({t.id: sample_in_input_axes(image, t)[None]})
        return {k: v[0] for k, v in outs.items()}

    return predict


def _covers(job: _Job, predict: PredictFn) -> list[Path]:
    """The packaged model on the whole sample, beside it."""
    whole = predict(job.raw)
    return [
        render_cover(
            job.path(f"cover_{t.id}.png"),
            job.raw,
            job.tin.axes,
            whole[t.id],
            t.axes,
            title_in=f"input: {job.tin.id}",
            title_out=f"output: {t.id}",
            channel_names=t.channel_names,
        )
        for t in job.info.outputs
    ]


def _evaluate(evaluate: EvaluateFn, predict: PredictFn) -> dict[str, Any]:
    evaluation = dict(evaluate(predict))
    for key in ("sample_count", "metrics"):
        if key not in evaluation:
            raise PackagingError(f"the use case's evaluate() result lacks {key!r} (got {sorted(evaluation)})")
    return evaluation


def _statistics(
    raw: np.ndarray, stats: Mapping[str, Any] | None, images: Iterable[np.ndarray] | None
) -> dict[str, Any]:
    if stats is not None:
        return dict(stats)
    if images is not None:
        return intensity_stats(images, source="the raw training images")
    log.warning("no training images given: intensity statistics come from the sample image only")
    return intensity_stats([raw], source="the sample image only (no training images were given)")


def _write_cards(
    job: _Job, file_name: str, stats: dict[str, Any], evaluation: dict[str, Any] | None, training: dict
) -> None:
    g, info, rep = job.geometry, job.info, job.options.reproducibility
    facts = CardFacts(
        input_axes=axes_text(job.tin, g.min_size, g.step, g.halo),
        output_axes={
            t.id: axes_text(t, g.min_size, g.step, g.halo, job.outs[i].shape)
            for i, t in enumerate(info.outputs)
        },
        halo=g.halo,
        step=g.step,
        min_size=g.min_size,
        receptive_field=g.receptive_field,
        weight_formats=tuple(job.formats),
        intensity=stats,
        evaluation=evaluation,
        training=training,
        tolerance=f"rtol {rep.rtol:g}, atol <= {rep.atol:g}",
        file_name=file_name,
        preprocessing=ops_text(D.with_float32_end(job.tin.processing)),
        postprocessing={t.id: ops_text(D.with_float32_end(t.processing)) for t in info.outputs},
    )
    job.path("README.md").write_text(render_card(info, facts), encoding="utf-8")
    job.path("training_data.md").write_text(data_card(info, stats), encoding="utf-8")


def _emzoo_config(
    job: _Job,
    exported: ExportedWeights,
    stats: dict[str, Any],
    evaluation: dict[str, Any] | None,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """``config.emzoo``: what the runtime compares inputs with, and how the package was made."""
    g, info = job.geometry, job.info
    config = {
        "emzoo_version": __version__,
        "training_data": {"intensity": stats, "pixel_size": dict(info.pixel_size), "unit": info.pixel_unit},
        "geometry": {
            "step": g.step,
            "min_size": g.min_size,
            "halo": g.halo,
            "receptive_field": g.receptive_field,
        },
        "export": D.export_record(exported),
    }
    if evaluation:
        config["evaluation"] = {k: v for k, v in evaluation.items() if k != "samples"}
    return jsonable({**config, **extra})


def _training_data(info: PackagingInfo, doc: Path):
    td = dict(info.training_data)
    td.setdefault("description", f"Training data of {info.name}. Split: {td.get('split', 'not recorded')}.")
    if td.get("license") and not is_license(td["license"]):
        td["description"] = f"{td['description']} License: {td['license']}."
        td["license"] = ""
    return D.training_data_descr(replace(info, training_data=td), doc)
