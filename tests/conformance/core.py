"""bioimageio.core's predictions, the reference of the differential tests: as its ``test_model``
computes test outputs, on a whole sample, and blockwise."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tests.conformance.reference import apply_ops


def post_ops(descr, output_id: str) -> tuple[list[dict], tuple[str, ...]]:
    """An output's post-processing as spec-0.5 op dicts (0.4 ops converted by bioimageio.spec), and
    its axis ids."""
    from bioimageio.spec.model import v0_4, v0_5

    if isinstance(descr, v0_4.ModelDescr):
        # bioimageio.core runs a 0.4 tensor's ops between a cast to its data type (not for the first
        # tensor without ops) and one to float32 (bioimageio.core.proc_setup._get_described_procs)
        index = next(i for i, o in enumerate(descr.outputs) if str(o.name) == output_id)
        out = descr.outputs[index]
        axes = tuple({"b": "batch", "c": "channel", "i": "index"}.get(a, a) for a in out.axes)
        converted = [v0_5._convert_proc(p, out.axes) for p in out.postprocessing]
        ops = [p.model_dump(mode="json") for p in converted]
        first = [] if index == 0 and not ops else [{"id": "ensure_dtype", "kwargs": {"dtype": out.data_type}}]
        return [*first, *ops, {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}], axes
    out = next(o for o in descr.outputs if str(o.id) == output_id)
    return [p.model_dump(mode="json") for p in out.postprocessing], tuple(str(a.id) for a in out.axes)


def _input_axes(descr) -> dict[str, tuple[str, ...]]:
    from bioimageio.spec.model import v0_4

    if isinstance(descr, v0_4.ModelDescr):
        names = {"b": "batch", "c": "channel", "i": "index"}
        return {str(t.name): tuple(names.get(a, a) for a in t.axes) for t in descr.inputs}
    return {str(t.id): tuple(str(a.id) for a in t.axes) for t in descr.inputs}


def predict(
    descr,
    inputs: Mapping[str, np.ndarray],
    *,
    weight_format: str,
    mode: str,
    block: Mapping[str, int] | None = None,
    reference_post: bool = False,
) -> dict[str, np.ndarray]:
    """bioimageio.core's outputs for ``inputs`` (model axis order, batch of one).

    ``mode``: ``test`` (as ``test_model``: no halo padding, no cropping), ``whole`` (one call on the
    sample padded by the halo, which is cropped again) or ``blocks`` (blocks of ``block`` px per
    input axis). ``reference_post``: bioimageio.core cannot run the post-processing (see
    :attr:`Case.core_fails`): its network output goes through :func:`reference.apply_ops`.
    """
    import bioimageio.core._prediction_pipeline as pipeline
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import create_sample_for_model

    pipeline.tqdm = _quiet  # its blockwise progress bars
    sample = create_sample_for_model(descr, inputs=dict(inputs), sample_id="s")
    with create_prediction_pipeline(descr, weight_format=weight_format, devices=["cpu"]) as pp:
        if mode == "test":
            if not reference_post:
                pp.apply_preprocessing(sample)
            else:
                _preprocess_only(pp, sample)
            out = pp.predict_sample_without_blocking(
                sample,
                skip_preprocessing=True,
                skip_postprocessing=True,
                skip_input_padding=True,
                skip_output_cropping=True,
            )
            if not reference_post:
                pp.apply_postprocessing(out)
        elif mode == "whole":
            if reference_post:
                _preprocess_only(pp, sample)
            out = pp.predict_sample_without_blocking(
                sample, skip_preprocessing=reference_post, skip_postprocessing=reference_post
            )
        elif mode == "blocks":
            assert block is not None
            if reference_post:
                _preprocess_only(pp, sample)
            shape = {t: dict(block) for t in _input_axes(descr)}
            out = pp.predict_sample_with_fixed_blocking(
                sample,
                input_block_shape=shape,
                skip_preprocessing=reference_post,
                skip_postprocessing=reference_post,
            )
        else:
            raise ValueError(mode)
    result = {str(k): v.data.to_numpy() for k, v in out.members.items()}
    if reference_post:
        raw = {k: (np.asarray(v), _input_axes(descr)[k]) for k, v in inputs.items()}
        for k in list(result):
            ops, axes = post_ops(descr, k)
            result[k] = np.asarray(apply_ops(ops, result[k], axes, raw))
    return result


def _quiet(iterable, **kwargs):
    return iterable


def _preprocess_only(pp, sample) -> None:
    """The pre-processing alone: bioimageio.core's statistics step computes every op's statistics,
    also the post-processing's, up front (and fails on the outputs' own): here only the inputs'."""
    from bioimageio.core.proc_ops import UpdateStats
    from bioimageio.core.stat_calculators import StatsCalculator

    ops = [*pp._samplewise_preprocessing, *pp._blockwise_preprocessing]
    measures = {m for op in ops for m in op.required_measures}
    if measures:
        sample.stat.update(StatsCalculator(measures).update_and_get_all(sample))
    for op in ops:
        if not isinstance(op, UpdateStats):
            op(sample)
