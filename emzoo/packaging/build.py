"""Build a self-validating bioimage.io package (spec 0.5) from a trained PyTorch module.

The steps, in order; any failure raises :class:`PackagingError` and leaves no package behind (all
work happens in a staging folder and a hidden partial file, renamed into place at the very end):

1. check the metadata (:mod:`emzoo.packaging.metadata`), before any slow work;
2. measure the network: down-sampling step, receptive field -> halo and minimum size;
3. crop a real sample to a valid test size, pre-process it with emzoo's ops, export ONNX,
   TorchScript and the state dict, and compare every format with the module on it;
4. write a draft package, run it with **emzoo's runtime** for every weight format and compare with
   a plain forward pass of the pre-processed test input (what ``bioimageio test`` expects: no
   padding, no cropping); the runtime's output becomes the test output (:mod:`emzoo.packaging.draft`);
5. run the use case's ``evaluate`` through the draft package; render covers and the model card;
6. assemble the final ``ModelDescr``, save it (zip or folder) with bioimageio.spec, read it back,
   run ``bioimageio.core.test_model`` for every weight format, and move it into place
   (:mod:`emzoo.packaging.save`).
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

from emzoo.package.spec import Tolerance
from emzoo.packaging import descr as D
from emzoo.packaging import draft
from emzoo.packaging.card import CardFacts, axes_text, data_card, ops_text, render_card, shown_package
from emzoo.packaging.covers import render_cover
from emzoo.packaging.draft import Job
from emzoo.packaging.export import (
    ALL_FORMATS,
    Architecture,
    ExportedWeights,
    PackagingError,
    export_weights,
    forward,
    frozen_copy,
)
from emzoo.packaging.export import Tolerance as ExportTolerance
from emzoo.packaging.geometry import measure
from emzoo.packaging.info import PackagingInfo, PredictFn, TensorInfo, with_float32_end
from emzoo.packaging.metadata import check_info, is_license
from emzoo.packaging.save import save_and_check
from emzoo.packaging.tensors import (
    check_output_shapes,
    crop_for_test,
    intensity_stats,
    jsonable,
    sample_in_input_axes,
)
from emzoo.version import __version__

log = logging.getLogger(__name__)

EvaluateFn = Callable[[PredictFn], Mapping[str, Any]]
# progress(stage, done): a new stage (done None), or ``done`` items of the current one finished
Progress = Callable[[str, int | None], None]

__all__ = ["BuildOptions", "Tolerance", "package_module"]


DEFAULT_TEST_SIZE = 256  # edge (px) of the test tensors unless the network needs more


@dataclass(frozen=True)
class BuildOptions:
    """How to build; the defaults suit small EM networks on a CPU.

    ``reproducibility`` is what the package promises (bioimage.io's reproducibility tolerance); its
    ``atol`` is lowered per output to what bioimageio.spec accepts (1% of the test output's maximum).
    """

    weight_formats: Sequence[str] = ALL_FORMATS
    step: int | None = None  # input size step (down-sampling factor); measured when None
    halo: int | None = None  # output halo in px; the measured receptive field, rounded up, when None
    test_size: int | None = None  # largest test-tensor edge (px), cropped from the sample; None: 256 or
    # the network's smallest input when that is larger
    export_tolerance: ExportTolerance = field(default_factory=ExportTolerance)
    reproducibility: Tolerance = field(default_factory=lambda: Tolerance(atol=1e-4))
    opset: int = 17
    torchscript: str = "auto"  # "script", "trace", or "auto" (script, else trace)
    version: str = "0.1.0"
    test_with_bioimageio: bool = True  # bioimageio.core.test_model per weight format before writing
    overwrite: bool = False
    progress: Progress | None = field(default=None, compare=False)  # told each step (emzoo package)


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
    ood_images: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
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
        More keys for ``config.emzoo`` (use case name, parameters...); read after ``evaluate`` has
        run, so that parameters calibrated on the packaged model there reach the config.
    ood_images
        ``(training images, validation images)``, raw, with the input's axes: the out-of-distribution
        statistics (``config.emzoo.ood``, :mod:`emzoo.tasks.ood`) are recorded from the first through
        the draft package, the false-warning rate measured on the second, and the card says so.

    Examples
    --------
    >>> arch = (Path("unet.py"), "UNet", {"depth": 2})
    >>> package_module(net, info, image, "model.zip", architecture=arch)  # doctest: +SKIP
    """
    options = options or BuildOptions()
    output = Path(output)
    formats, architecture = _check_request(info, output, architecture, options)
    tin = info.inputs[0]
    raw = sample_in_input_axes(sample, tin)
    network = frozen_copy(module)
    _tell(options, "measuring the network (size step, receptive field)")
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
        job = Job(network, info, raw, stage, geometry, formats, options.reproducibility, options.version)
        final = _build(
            job,
            options,
            architecture,
            shown_package(output),
            evaluate=evaluate,
            stats=_statistics(raw, training_stats, training_images),
            training=dict(training or {}),
            extra_config=extra_config or {},
            ood_images=ood_images,
        )
        checked = f" and running bioimageio.core's test_model ({', '.join(formats)})"
        _tell(options, "writing the package" + (checked if options.test_with_bioimageio else ""))
        save_and_check(final, output, formats, test_with_bioimageio=options.test_with_bioimageio)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    log.info("wrote %s", output)
    return output


def _check_request(
    info: PackagingInfo,
    output: Path,
    architecture: Architecture | tuple[Path, str, Mapping[str, Any]] | None,
    options: BuildOptions,
) -> tuple[list[str], Architecture | None]:
    """Step 1: what can be checked before any slow work; the weight formats to write."""
    if output.exists() and not options.overwrite:
        raise PackagingError(
            f"{output} already exists: choose another output or overwrite it ({{overwrite=True}})"
        )
    check_info(info)
    for t, kind in [(info.inputs[0], "pre"), *((o, "post") for o in info.outputs)]:
        D.processing_descrs(with_float32_end(t.processing), kind)  # fails early on an invalid step
    formats = [f for f in ALL_FORMATS if f in options.weight_formats]
    if isinstance(architecture, tuple):
        architecture = Architecture(Path(architecture[0]), architecture[1], dict(architecture[2]))
    if architecture is None and "pytorch_state_dict" in formats:
        log.warning("no architecture source given: the package gets no pytorch_state_dict weights")
        formats.remove("pytorch_state_dict")
    if not formats:
        raise PackagingError(f"no weight formats to write: choose from {', '.join(ALL_FORMATS)}")
    return formats, architecture


def _build(
    job: Job,
    options: BuildOptions,
    architecture: Architecture | None,
    file_name: str,
    *,
    evaluate: EvaluateFn | None,
    stats: dict[str, Any],
    training: dict[str, Any],
    extra_config: Mapping[str, Any],
    ood_images: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
):
    """Steps 3-5 in the staging folder; returns the final ``ModelDescr``."""
    from bioimageio.spec.common import FileDescr

    info = job.info
    _tell(options, f"exporting {', '.join(job.formats)} and checking them against PyTorch")
    exported = _export(job, options, architecture)
    tolerances = draft.package_tolerances(job)
    described = draft.describe(job, exported, tolerances, draft.save_plain_outputs(job))
    draft_dir = draft.save_draft(described, job.path("draft"))
    _tell(options, "running the draft package with emzoo's runtime (test tensors, covers)")
    reference, test_outputs, sample_outputs = draft.runtime_test_outputs(job, draft_dir, tolerances)
    predict = draft.predict_fn(draft_dir, reference, job.tin)
    covers = _covers(job, predict)
    attachments = []
    evaluation = None
    if evaluate is not None:
        _tell(options, "evaluating the package and its classical baseline on the held-out images")
        evaluation = _evaluate(evaluate, _counted(predict, options))
        job.path("evaluation.json").write_text(json.dumps(jsonable(evaluation), indent=1))
        attachments.append(job.path("evaluation.json"))
    _write_cards(job, file_name, stats, evaluation, training)
    if ood_images is not None:
        ood, files = _ood(job, draft_dir, ood_images, options)
        extra_config = {**extra_config, "ood": ood}
        attachments += files
    config = D.config_descr(
        tolerances=D.tolerance_descrs(tolerances),
        evaluations=[D.evaluation_descr(evaluation, info)] if evaluation else [],
        info=info,
        training=training,
        parameter_count=int(sum(p.numel() for p in job.network.parameters())),
        architecture_type=type(job.network).__name__,
        emzoo=_emzoo_config(job, exported, stats, evaluation, extra_config),
    )
    return draft.describe(
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


# -- steps ------------------------------------------------------------------------------------------


def _export(job: Job, options: BuildOptions, architecture: Architecture | None) -> ExportedWeights:
    """Test crop -> pre-processed network input -> exports, checked on it and on a batch of two
    minimum-size crops (other batch and spatial sizes than the export's)."""
    tin, info = job.tin, job.info
    size = options.test_size or max(DEFAULT_TEST_SIZE, job.geometry.min_size)
    job.crop = crop_for_test(job.raw, tin, job.geometry, size)
    job.test_input = np.ascontiguousarray(job.crop[None].astype(np.float32))
    x = tin.apply_processing(job.test_input[0])[None].astype(np.float32)
    job.outs = forward(job.network, [x])
    check_output_shapes(job.outs, info, x)
    job.plain = {
        t.id: t.apply_processing(o[0])[None].astype(np.float32)
        for o, t in zip(job.outs, info.outputs, strict=False)
    }
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
        opset=options.opset,
        torchscript=options.torchscript,  # type: ignore[arg-type]
        tolerance=options.export_tolerance,
        check_inputs=[[second]],
    )


def _covers(job: Job, predict: PredictFn) -> list[Path]:
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


def _ood(job: Job, draft_dir: Path, images, options: BuildOptions) -> tuple[dict[str, Any], list[Path]]:
    """Step 5b: the training images' out-of-distribution statistics through the draft package, the
    false-warning rate on the validation images, and the card's section on them; with the files of
    the network's features (attachments)."""
    from emzoo.tasks.ood.calibrate import calibrate_arrays
    from emzoo.tasks.ood.package import card_section, embedding_files, measured_record, with_section

    _tell(options, "recording the training images' out-of-distribution statistics")
    reference, held_out = ([sample_in_input_axes(a, job.tin) for a in group] for group in images)
    result = calibrate_arrays(draft_dir, reference, held_out, axes=job.tin.axes, trust_package_code=True)
    card = job.path("README.md")
    text = with_section(card.read_text(encoding="utf-8"), card_section(result, None))
    card.write_text(text, encoding="utf-8")
    entry, files = embedding_files(result, job.stage)
    return {**result.stats.to_dict(), **entry, **measured_record(result)}, files


def _tell(options: BuildOptions, stage: str, done: int | None = None) -> None:
    log.info("%s%s", stage, "" if done is None else f" [{done}]")
    if options.progress is not None:
        options.progress(stage, done)


def _counted(predict: PredictFn, options: BuildOptions) -> PredictFn:
    """``predict`` that tells ``options.progress`` how many images it has predicted."""
    done = 0

    def counted(image: np.ndarray, tta: bool | None = None) -> dict[str, np.ndarray]:
        nonlocal done
        result = predict(image, tta=tta)
        done += 1
        if options.progress is not None:
            options.progress("images predicted", done)
        return result

    return counted


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
    job: Job, file_name: str, stats: dict[str, Any], evaluation: dict[str, Any] | None, training: dict
) -> None:
    g, info, rep = job.geometry, job.info, job.reproducibility
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
        preprocessing=ops_text(with_float32_end(job.tin.processing)),
        postprocessing={t.id: ops_text(with_float32_end(t.processing)) for t in info.outputs},
    )
    job.path("README.md").write_text(render_card(info, facts), encoding="utf-8")
    job.path("training_data.md").write_text(data_card(info, stats), encoding="utf-8")


def _emzoo_config(
    job: Job,
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
