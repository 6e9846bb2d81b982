"""Every spec 0.5 processing op against bioimageio.core's own implementation."""

from __future__ import annotations

import numpy as np
import pytest

from emzoo.package.spec import Op
from emzoo.runtime import processing

AXES = ("batch", "channel", "y", "x")

CASES = [
    Op("binarize", {"threshold": 0.3}),
    Op("clip", {"min": -0.5, "max": 0.7}),
    Op("clip", {"min_percentile": 5.0, "max_percentile": 95.0, "axes": ["channel", "y", "x"]}),
    Op("ensure_dtype", {"dtype": "uint8"}),
    Op("ensure_dtype", {"dtype": "float32"}),
    Op("fixed_zero_mean_unit_variance", {"mean": 0.2, "std": 1.7}),
    Op("fixed_zero_mean_unit_variance", {"axis": "channel", "mean": [0.1, -0.2], "std": [1.1, 0.9]}),
    Op("scale_linear", {"gain": 2.5, "offset": -1.0}),
    Op("scale_linear", {"axis": "channel", "gain": [1.0, 3.0], "offset": [0.5, -0.5]}),
    Op("scale_range", {"axes": ["y", "x"], "min_percentile": 1.0, "max_percentile": 99.0}),
    Op("scale_range", {"axes": ["channel", "y", "x"], "min_percentile": 0.0, "max_percentile": 100.0}),
    Op("sigmoid"),
    Op("softmax", {"axis": "channel"}),
    Op("zero_mean_unit_variance", {"axes": ["y", "x"]}),
    Op("zero_mean_unit_variance", {"axes": ["channel", "y", "x"]}),
]


def _core(op: Op, data: np.ndarray) -> np.ndarray:
    """Run one op through bioimageio.core (the reference implementation)."""
    from bioimageio.core import Sample, Tensor
    from bioimageio.core.proc_ops import get_proc
    from bioimageio.core.proc_setup import setup_pre_and_postprocessing  # noqa: F401
    from bioimageio.core.stat_calculators import compute_measures
    from bioimageio.spec.model import v0_5

    descr_cls = {
        "binarize": v0_5.BinarizeDescr,
        "clip": v0_5.ClipDescr,
        "ensure_dtype": v0_5.EnsureDtypeDescr,
        "fixed_zero_mean_unit_variance": v0_5.FixedZeroMeanUnitVarianceDescr,
        "scale_linear": v0_5.ScaleLinearDescr,
        "scale_range": v0_5.ScaleRangeDescr,
        "sigmoid": v0_5.SigmoidDescr,
        "softmax": v0_5.SoftmaxDescr,
        "zero_mean_unit_variance": v0_5.ZeroMeanUnitVarianceDescr,
    }[op.id]
    descr = descr_cls(kwargs=op.kwargs) if op.kwargs else descr_cls()
    tensor_descr = v0_5.InputTensorDescr(
        id=v0_5.TensorId("raw"),
        axes=[
            v0_5.BatchAxis(),
            v0_5.ChannelAxis(channel_names=[v0_5.Identifier("a"), v0_5.Identifier("b")]),
            v0_5.SpaceInputAxis(id=v0_5.AxisId("y"), size=data.shape[2]),
            v0_5.SpaceInputAxis(id=v0_5.AxisId("x"), size=data.shape[3]),
        ],
        data=v0_5.IntervalOrRatioDataDescr(type="float32"),
    )
    proc = get_proc(descr, tensor_descr)
    sample = Sample(members={"raw": Tensor.from_numpy(data, dims=AXES)}, stat={}, id="s")
    sample.stat = compute_measures(proc.required_measures, [sample])
    proc(sample)
    return sample.members["raw"].data.to_numpy()


@pytest.mark.parametrize("op", CASES, ids=lambda op: f"{op.id}-{'-'.join(map(str, op.kwargs))}")
def test_op_matches_bioimageio_core(op, rng):
    data = rng.normal(0.3, 1.5, size=(1, 2, 40, 48)).astype(np.float32)
    ours = processing.apply([op], processing.Tensor(data, AXES))
    reference = _core(op, data)
    assert ours.shape == reference.shape
    # same kind of values (emzoo keeps float32 where bioimageio.core sometimes widens to float64;
    # both end their chains with an explicit ensure_dtype)
    assert ours.dtype.kind == reference.dtype.kind
    np.testing.assert_allclose(ours.astype(np.float64), reference.astype(np.float64), rtol=1e-5, atol=1e-5)


def test_zero_mean_unit_variance_honours_eps(rng):
    """bioimageio.core 0.11 drops this op's ``eps`` (always 1e-6); emzoo uses the declared one."""
    data = rng.normal(0.0, 1.0, size=(1, 1, 20, 20)).astype(np.float32)
    op = Op("zero_mean_unit_variance", {"axes": ["y", "x"], "eps": 0.5})
    out = processing.apply([op], processing.Tensor(data, AXES))
    np.testing.assert_allclose(out, (data - data.mean()) / (data.std() + 0.5), rtol=1e-5, atol=1e-6)


def test_scale_mean_variance_matches_the_reference_formula(rng):
    x = rng.normal(2.0, 3.0, size=(1, 1, 32, 32)).astype(np.float32)
    ref = rng.normal(-1.0, 0.5, size=(1, 1, 32, 32)).astype(np.float32)
    op = Op("scale_mean_variance", {"reference_tensor": "ref", "axes": ["y", "x"], "eps": 1e-6})
    out = processing.apply([op], processing.Tensor(x, AXES), {"ref": processing.Tensor(ref, AXES)})
    expected = (x - x.mean()) / (x.std() + 1e-6) * (ref.std() + 1e-6) + ref.mean()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_statistics_come_from_the_whole_image_not_the_tile(rng):
    """A tile processed with the bound function equals the same crop of the processed whole image."""
    image = rng.gamma(2.0, 30.0, size=(1, 1, 300, 260)).astype(np.uint8)
    ops = [
        Op("ensure_dtype", {"dtype": "float32"}),
        Op("zero_mean_unit_variance", {"axes": ["channel", "y", "x"]}),
        Op("ensure_dtype", {"dtype": "float32"}),
    ]
    fn = processing.bind(ops, processing.Tensor(image, AXES))
    whole = fn(image)
    tile = fn(image[..., 100:164, 20:84])
    np.testing.assert_array_equal(tile, whole[..., 100:164, 20:84])
    assert abs(float(whole.mean())) < 1e-5 and abs(float(whole.std()) - 1) < 1e-4


def test_mean_std_streams_in_float64(rng):
    data = rng.integers(0, 65535, size=(1, 1, 1000, 37), dtype=np.uint16)
    mean, std = processing.mean_std(processing.Tensor(data, AXES), ["y", "x"])
    assert mean.item() == pytest.approx(data.astype(np.float64).mean(), rel=1e-12)
    assert std.item() == pytest.approx(data.astype(np.float64).std(), rel=1e-12)


def test_unknown_op_is_refused_with_its_name():
    with pytest.raises(NotImplementedError, match="stardist_postprocessing"):
        processing.bind([Op("stardist_postprocessing")], processing.Tensor(np.zeros((1, 1, 4, 4)), AXES))


def test_statistics_are_those_of_the_tensor_entering_the_ops_as_in_bioimageio_core(rng):
    """bioimageio.core computes every statistic of a pipeline up front, on the unprocessed tensor:
    a zero_mean_unit_variance after a clip uses the mean and std of the image before the clip."""
    from bioimageio.core import Sample, Tensor
    from bioimageio.core.proc_ops import get_proc
    from bioimageio.core.stat_calculators import compute_measures
    from bioimageio.spec.model import v0_5

    data = rng.normal(0.3, 1.5, size=(1, 2, 40, 48)).astype(np.float32)
    ops = [Op("clip", {"min": -0.5, "max": 0.7}), Op("zero_mean_unit_variance", {"axes": ["y", "x"]})]
    descrs = [
        v0_5.ClipDescr(kwargs={"min": -0.5, "max": 0.7}),
        v0_5.ZeroMeanUnitVarianceDescr(kwargs={"axes": ["y", "x"]}),
    ]
    tensor_descr = v0_5.InputTensorDescr(
        id=v0_5.TensorId("raw"),
        axes=[
            v0_5.BatchAxis(),
            v0_5.ChannelAxis(channel_names=[v0_5.Identifier("a"), v0_5.Identifier("b")]),
            v0_5.SpaceInputAxis(id=v0_5.AxisId("y"), size=40),
            v0_5.SpaceInputAxis(id=v0_5.AxisId("x"), size=48),
        ],
        data=v0_5.IntervalOrRatioDataDescr(type="float32"),
    )
    procs = [get_proc(d, tensor_descr) for d in descrs]
    sample = Sample(members={"raw": Tensor.from_numpy(data, dims=AXES)}, stat={}, id="s")
    sample.stat = compute_measures({m for p in procs for m in p.required_measures}, [sample])
    for p in procs:
        p(sample)
    reference = sample.members["raw"].data.to_numpy()
    ours = processing.apply(ops, processing.Tensor(data, AXES))
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)
    mean, std = data.mean((2, 3), keepdims=True), data.std((2, 3), keepdims=True)
    np.testing.assert_allclose(ours, (np.clip(data, -0.5, 0.7) - mean) / (std + 1e-6), rtol=1e-4, atol=1e-4)


def test_reference_tensors_are_read_from_refs_and_named_when_missing(rng):
    x = rng.normal(2.0, 3.0, size=(1, 1, 32, 32)).astype(np.float32)
    ref = rng.integers(0, 255, size=(1, 1, 32, 32)).astype(np.uint8)
    op = Op("scale_range", {"reference_tensor": "ref", "axes": ["y", "x"], "min_percentile": 0.0})
    out = processing.apply([op], processing.Tensor(x, AXES), {"ref": processing.Tensor(ref, AXES)})
    np.testing.assert_allclose(out, (x - ref.min()) / (float(ref.max()) - ref.min() + 1e-6), rtol=1e-5)
    with pytest.raises(ValueError, match="'ref', which is not given"):
        processing.apply([op], processing.Tensor(x, AXES))
    assert processing.needs_stats(op) and not processing.needs_own_stats(op)


def test_axes_that_statistics_keep_are_named():
    per_row = Op("zero_mean_unit_variance", {"axes": ["channel", "x"]})
    assert processing.varying_axes([per_row], AXES) == {"y"}  # batch has one element
    assert processing.varying_axes([Op("zero_mean_unit_variance")], AXES) == set()
    assert processing.varying_axes([Op("sigmoid")], AXES) == set()
