"""The conformance matrix: every generated package as plain data (no torch, no bioimageio import).

Each :class:`Case` is one small real package that :mod:`tests.conformance.generate` builds: spec 0.4
and 0.5 descriptions, 2D and 3D, fixed, parameterized and referenced input sizes, halos, scaled and
offset outputs, output axes the input lacks, several inputs and outputs, every pre- and
post-processing op in every argument form, uint8/uint16/float32 inputs and the three weight formats.
Ops are written as the package's spec version writes them (``id``/``kwargs`` in 0.5,
``name``/``kwargs`` in 0.4).

``python -m tests.conformance.matrix docs/conformance.md`` writes the feature table of
``docs/conformance.md`` (``tests/conformance/test_docs.py`` checks that it is current).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

TEST_SIZE = {2: (32, 32), 3: (16, 16, 16)}  # test tensors (param: min + 2 steps)
IMAGE_SIZE = {2: (96, 128), 3: (24, 40, 48)}  # the differential inputs (valid param sizes)
FIXED_IMAGE_SIZE = {2: (88, 104), 3: (20, 36, 44)}  # larger than the fixed size, not a multiple
MIN_STEP = {2: (16, 8), 3: (8, 4)}
BLOCK = {2: 48, 3: 16}  # forced block edge for the tiled runs (emzoo and bioimageio.core)
AXES = {2: "yx", 3: "zyx"}


@dataclass(frozen=True)
class In:
    id: str = "raw"
    channels: int = 1
    dtype: str = "float32"
    pre: tuple[dict, ...] = ()
    size: str = "param"  # param | fixed | ref (follows the first input's spatial axes)


@dataclass(frozen=True)
class Out:
    id: str = "out"
    channels: int = 1
    geometry: str = "same"  # same | up | down | crop2 | unsqueeze (an extra singleton z)
    halo: int = 0  # output px
    post: tuple[dict, ...] = ()
    channel_type: str = "channel"  # channel | index
    dtype: str = "float32"
    fixed: bool = False  # 0.4: a fixed output shape (declared with its halo)
    ref: int = 0  # the input whose axes its size follows


@dataclass(frozen=True)
class Case:
    name: str
    spec: str = "0.5"
    dims: int = 2
    inputs: tuple[In, ...] = (In(),)
    outputs: tuple[Out, ...] = (Out(),)
    kernel: int | None = None  # default: 3 with a halo (which covers it), else 1 (pointwise)
    layers: int = 1
    weights: tuple[str, ...] = ("onnx",)
    quirk: str | None = None  # npy_samples (0.4 sample files as .npy) | broken (wrong test outputs)
    tolerance: tuple[tuple[str, float], ...] = ()  # reproducibility_tolerance fields besides the defaults
    core_fails: str | None = None  # why bioimageio.core 0.11 cannot run it (a documented difference)

    @property
    def conv(self) -> int:
        """The convolutions' kernel size."""
        if self.kernel is not None:
            return self.kernel
        return 3 if any(o.halo for o in self.outputs) else 1

    @property
    def radius(self) -> int:
        """The network's receptive-field radius (input px)."""
        return self.layers * (self.conv // 2)

    @property
    def fixed(self) -> bool:
        return self.inputs[0].size == "fixed"

    @property
    def expect_pass(self) -> bool:
        return self.quirk != "broken"

    @property
    def core_passes(self) -> bool:
        return self.expect_pass and self.core_fails is None

    @property
    def halo_covers_radius(self) -> bool:
        """bioimageio.core's blocks have the declared halo as context: exact iff it covers the field."""
        return all(input_halo(o) >= self.radius for o in self.outputs)

    def features(self) -> list[str]:
        return sorted(set(_features(self)))


def input_halo(o: Out) -> float:
    return o.halo * {"up": 0.5, "down": 2.0}.get(o.geometry, 1.0)


def _op_form(op: dict) -> str:
    kw = op.get("kwargs") or {}
    keys = []
    for k, v in sorted(kw.items()):
        if k in ("eps",):
            continue
        if isinstance(v, list) and k not in ("axes",):
            keys.append(f"{k}[]")
        elif k == "axes":
            keys.append("axes=" + ",".join(v) if isinstance(v, list) else f"axes={v}")
        elif k == "mode":
            keys.append(f"mode={v}")
        elif k == "dtype":
            keys.append(f"dtype={v}")
        else:
            keys.append(k)
    return f"{op.get('id') or op.get('name')}({', '.join(keys)})"


def _features(c: Case):
    yield f"spec {c.spec}"
    yield f"{c.dims}D"
    for t in c.inputs:
        yield f"input size: {t.size}"
        yield f"input dtype: {t.dtype}"
        for op in t.pre:
            yield f"spec {c.spec} preprocessing: {_op_form(op)}"
    if len(c.inputs) > 1:
        yield "several inputs"
    if len(c.outputs) > 1:
        yield "several outputs"
    for o in c.outputs:
        yield f"output geometry: {o.geometry}"
        if o.halo:
            yield "output halo"
        if o.channel_type == "index":
            yield "output index axis"
        if o.fixed:
            yield "0.4 fixed-size output with halo"
        if o.dtype != "float32":
            yield f"output dtype: {o.dtype}"
        for op in o.post:
            yield f"spec {c.spec} postprocessing: {_op_form(op)}"
    for w in c.weights:
        yield f"weights: {w}"
    if c.quirk == "npy_samples":
        yield "0.4 sample_inputs/sample_outputs as .npy"
    if c.quirk == "broken":
        yield "test outputs that do not match (both tests must fail)"
    if c.radius and not c.halo_covers_radius:
        yield "receptive field beyond the declared halo"


# ------------------------------------------------------------------------------------------ ops


def op5(op_id: str, **kwargs) -> dict:
    return {"id": op_id, "kwargs": kwargs} if kwargs else {"id": op_id}


def op4(name: str, **kwargs) -> dict:
    return {"name": name, "kwargs": kwargs} if kwargs else {"name": name}


F32 = op5("ensure_dtype", dtype="float32")
BOOL_TOLERANCE = (("mismatched_elements_per_million", 2000),)
INT_TOLERANCE = (("absolute_tolerance", 1.0), ("mismatched_elements_per_million", 2000))
OWN_STATS = "bioimageio.core 0.11 cannot compute statistics of an output (KeyError in its UpdateStats)"
PER_AXIS_BINARIZE = "bioimageio.core 0.11 broadcasts per-axis binarize thresholds along the last axis"
U8 = In(dtype="uint8", pre=(F32,))


def _pre(*ops: dict, dtype: str = "float32", channels: int = 1) -> tuple[In, ...]:
    return (In(dtype=dtype, channels=channels, pre=(*ops, F32)),)


def _geometry_cases() -> list[Case]:
    cases = []
    for spec in ("0.5", "0.4"):
        v = spec.replace(".", "")
        pre = (op4("zero_mean_unit_variance", mode="per_sample", axes="yx"),) if spec == "0.4" else (F32,)
        raw = In(dtype="uint8", pre=pre)
        # fixed-size inputs are compared on windows, so without statistics of the whole image
        linear = (op4("scale_linear", gain=0.01, offset=-1.0),) if spec == "0.4" else (F32,)
        cases += [
            Case(
                f"g{v}-param-halo",
                spec,
                inputs=(raw,),
                outputs=(Out(halo=4),),
                weights=("onnx", "torchscript"),
            ),
            Case(f"g{v}-param-nohalo-pointwise", spec, inputs=(raw,), kernel=1, weights=("torchscript",)),
            Case(f"g{v}-param-nohalo-rf", spec, inputs=(raw,), kernel=3, layers=2, weights=("onnx",)),
            Case(
                f"g{v}-fixed-halo",
                spec,
                inputs=(In(dtype="uint8", pre=linear, size="fixed"),),
                outputs=(Out(halo=4),),
                weights=("onnx",),
            ),
            Case(f"g{v}-up2", spec, inputs=(raw,), outputs=(Out(geometry="up", halo=8),), weights=("onnx",)),
            Case(
                f"g{v}-down2",
                spec,
                inputs=(raw,),
                outputs=(Out(geometry="down", halo=2),),
                weights=("torchscript",),
            ),
            Case(
                f"g{v}-crop",
                spec,
                inputs=(raw,),
                outputs=(Out(geometry="crop2"),),
                kernel=3,
                weights=("onnx",),
            ),
            Case(
                f"g{v}-3d-param-halo",
                spec,
                dims=3,
                inputs=(In(pre=pre if spec == "0.4" else ()),),
                outputs=(Out(halo=2),),
                weights=("onnx",),
            ),
            Case(
                f"g{v}-multi",
                spec,
                inputs=(In("a", pre=pre), In("b", channels=2, pre=pre)),
                outputs=(
                    Out("prob", post=(op4("sigmoid") if spec == "0.4" else op5("sigmoid"),), halo=4),
                    Out("lin", channels=3, halo=4, ref=1),
                ),
                weights=("onnx", "pytorch_state_dict"),
            ),
        ]
    cases[-1] = Case(
        "g04-multi",
        "0.4",
        inputs=(In("a", pre=(op4("scale_linear", gain=0.5, offset=1.0),)), In("b", channels=2)),
        outputs=(Out("prob", post=(op4("sigmoid"),), halo=4), Out("lin", channels=3, halo=4, ref=1)),
        weights=("onnx", "pytorch_state_dict"),
    )
    fixed_pre = (op4("zero_mean_unit_variance", mode="per_sample", axes="yx"),)
    cases += [
        # 0.5 only: a second input whose size follows the first; an extra singleton z axis on a
        # fixed-size input; an index axis; 3D fixed
        Case(
            "g05-ref-input",
            inputs=(In("a", pre=(F32,)), In("b", dtype="uint16", pre=(F32,), size="ref")),
            outputs=(Out(), Out("second", channels=2)),
            weights=("onnx",),
        ),
        Case(
            "g05-fixed-extra-z",
            inputs=(In(dtype="uint8", pre=(F32,), size="fixed"),),
            outputs=(Out(geometry="unsqueeze", halo=4),),
            weights=("torchscript",),
        ),
        Case(
            "g05-param-extra-z",
            inputs=(U8,),
            outputs=(Out(geometry="unsqueeze"),),
            kernel=1,
            weights=("onnx",),
        ),
        Case("g05-index-axis", inputs=(U8,), outputs=(Out(channels=3, channel_type="index", halo=4),)),
        Case(
            "g05-3d-fixed-down",
            dims=3,
            inputs=(In(size="fixed"),),
            outputs=(Out(geometry="down", halo=1), Out("same", halo=2)),
            weights=("onnx",),
        ),
        # 0.4 only: what bioimageio.spec cannot convert to 0.5 (bioimageio.core runs the 0.4 form)
        Case(
            "g04-fixed-output-halo",
            "0.4",
            inputs=(In(size="fixed", pre=fixed_pre),),
            outputs=(Out(halo=4, fixed=True),),
            weights=("onnx",),
        ),
        Case("g04-npy-samples", "0.4", inputs=(In(pre=fixed_pre),), quirk="npy_samples", weights=("onnx",)),
        # a package whose test outputs are wrong: emzoo test and bioimageio test must both fail
        Case("g05-broken", inputs=(U8,), quirk="broken", weights=("onnx",)),
        Case("g04-broken", "0.4", inputs=(In(pre=fixed_pre),), quirk="broken", weights=("torchscript",)),
    ]
    return cases


def _pre_cases() -> list[Case]:
    two = {"channels": 2}
    return [
        Case("p05-scale-linear", inputs=_pre(op5("scale_linear", gain=0.01, offset=-0.5), dtype="uint16")),
        Case(
            "p05-scale-linear-axis",
            inputs=_pre(op5("scale_linear", axis="channel", gain=[0.5, 2.0], offset=[0.1, -0.2]), **two),
            weights=("torchscript",),
        ),
        Case(
            "p05-fixed-zmuv",
            inputs=_pre(op5("fixed_zero_mean_unit_variance", mean=100.0, std=40.0), dtype="uint8"),
        ),
        Case(
            "p05-fixed-zmuv-axis",
            inputs=_pre(
                op5("fixed_zero_mean_unit_variance", axis="channel", mean=[0.1, 0.3], std=[1.5, 0.7]), **two
            ),
            weights=("pytorch_state_dict",),
        ),
        Case("p05-zmuv-all", inputs=_pre(op5("zero_mean_unit_variance"), dtype="uint16")),
        Case("p05-zmuv-cyx", inputs=_pre(op5("zero_mean_unit_variance", axes=["channel", "y", "x"]), **two)),
        Case(
            "p05-zmuv-yx-eps",
            inputs=_pre(op5("zero_mean_unit_variance", axes=["y", "x"], eps=0.001), dtype="uint8", **two),
            weights=("torchscript",),
        ),
        Case(
            "p05-scale-range-yx",
            inputs=_pre(
                op5("scale_range", axes=["y", "x"], min_percentile=1.0, max_percentile=99.5),
                dtype="uint8",
                **two,
            ),
        ),
        Case("p05-scale-range-default", inputs=_pre(op5("scale_range"), dtype="uint16")),
        Case(
            "p05-scale-range-ref",
            inputs=(
                In(
                    "a",
                    dtype="uint16",
                    pre=(
                        op5(
                            "scale_range",
                            axes=["channel", "y", "x"],
                            min_percentile=2.0,
                            max_percentile=98.0,
                            reference_tensor="b",
                        ),
                        F32,
                    ),
                ),
                In("b", dtype="uint16", pre=(F32,)),
            ),
            weights=("pytorch_state_dict",),
        ),
        Case("p05-clip", inputs=_pre(op5("clip", min=-0.5, max=1.5))),
        Case(
            "p05-clip-percentiles",
            inputs=_pre(op5("clip", min_percentile=5.0, max_percentile=95.0, axes=["y", "x"]), dtype="uint8"),
        ),
        Case(
            "p05-clip-max-percentile", inputs=_pre(op5("clip", min=0.0, max_percentile=90.0), dtype="uint16")
        ),
        Case(
            "p05-binarize-sigmoid",
            inputs=_pre(op5("sigmoid"), op5("binarize", threshold=0.6)),
            weights=("torchscript",),
        ),
        Case(
            "p05-binarize-3d",
            dims=3,
            inputs=_pre(op5("binarize", threshold=0.2), **two),
            outputs=(Out(halo=2),),
        ),
        Case("p05-softmax", inputs=_pre(op5("softmax", axis="channel"), **two)),
        Case(
            "p05-chain",
            inputs=_pre(
                F32,
                op5("clip", min=10.0, max=240.0),
                op5("zero_mean_unit_variance", axes=["y", "x"]),
                op5("scale_linear", gain=2.0, offset=0.5),
                dtype="uint8",
            ),
            outputs=(Out(halo=4),),
            weights=("onnx", "torchscript"),
        ),
        # 0.4 argument forms
        Case(
            "p04-zmuv-per-sample",
            "0.4",
            inputs=(
                In(dtype="uint16", pre=(op4("zero_mean_unit_variance", mode="per_sample", axes="cyx"),)),
            ),
        ),
        Case(
            "p04-zmuv-fixed-axis",
            "0.4",
            inputs=(
                In(
                    channels=2,
                    pre=(
                        op4(
                            "zero_mean_unit_variance",
                            mode="fixed",
                            axes="yx",
                            mean=[0.1, 0.2],
                            std=[1.1, 0.9],
                        ),
                    ),
                ),
            ),
        ),
        Case(
            "p04-scale-range-ref",
            "0.4",
            inputs=(
                In(
                    "a",
                    dtype="uint8",
                    pre=(
                        op4(
                            "scale_range",
                            mode="per_sample",
                            axes="cyx",
                            min_percentile=1.0,
                            max_percentile=99.0,
                            reference_tensor="b",
                        ),
                    ),
                ),
                In("b", dtype="uint8", pre=(op4("scale_range", mode="per_sample", axes="yx"),)),
            ),
            weights=("torchscript",),
        ),
        Case(
            "p04-per-dataset",
            "0.4",
            inputs=(
                In(
                    "a", dtype="uint16", pre=(op4("zero_mean_unit_variance", mode="per_dataset", axes="cyx"),)
                ),
                In("b", pre=(op4("scale_range", mode="per_dataset", axes="yx", max_percentile=95.0),)),
            ),
            weights=("torchscript",),
        ),
        Case(
            "p04-scale-linear-clip-binarize",
            "0.4",
            inputs=(
                In(
                    pre=(
                        op4("scale_linear", gain=2.0, offset=-0.5),
                        op4("clip", min=-1.0, max=1.0),
                        op4("binarize", threshold=0.1),
                    ),
                ),
            ),
        ),
    ]


def _post_cases() -> list[Case]:
    raw = (U8,)
    return [
        Case(
            "q05-sigmoid",
            inputs=raw,
            outputs=(Out(post=(op5("sigmoid"),), halo=4),),
            weights=("torchscript",),
        ),
        Case("q05-softmax", inputs=raw, outputs=(Out(channels=3, post=(op5("softmax", axis="channel"),)),)),
        Case(
            "q05-binarize",
            inputs=(In(),),
            outputs=(Out(post=(op5("binarize", threshold=-0.16),), dtype="bool"),),
            tolerance=BOOL_TOLERANCE,
        ),
        Case(
            "q05-binarize-axis",
            inputs=raw,
            outputs=(
                Out(channels=2, post=(op5("binarize", axis="channel", threshold=[-0.1, 0.2]),), dtype="bool"),
            ),
            tolerance=BOOL_TOLERANCE,
            core_fails=PER_AXIS_BINARIZE,
            weights=("pytorch_state_dict",),
        ),
        Case(
            "q05-scale-linear-axis",
            inputs=raw,
            outputs=(
                Out(
                    channels=2,
                    post=(op5("scale_linear", axis="channel", gain=[2.0, -1.0], offset=[0.0, 3.0]),),
                ),
            ),
        ),
        Case("q05-clip", inputs=raw, outputs=(Out(post=(op5("clip", min=-0.2, max=0.2),)),)),
        Case(
            "q05-scale-range",
            inputs=raw,
            outputs=(
                Out(
                    channels=2,
                    post=(op5("scale_range", axes=["y", "x"], min_percentile=1.0, max_percentile=99.0),),
                ),
            ),
            core_fails=OWN_STATS,
        ),
        Case(
            "q05-scale-range-ref",
            inputs=(In(dtype="uint8", pre=(F32,)),),
            outputs=(
                Out(post=(op5("scale_range", axes=["channel", "y", "x"], reference_tensor="raw"),), halo=4),
            ),
            weights=("torchscript",),
        ),
        Case(
            "q05-scale-mean-variance-ref",
            inputs=raw,
            outputs=(
                Out(
                    post=(op5("scale_mean_variance", reference_tensor="raw", axes=["channel", "y", "x"]),),
                ),
            ),
            core_fails=OWN_STATS,
        ),
        Case(
            "q05-scale-mean-variance-ref-all",
            inputs=(In("a", pre=(F32,)), In("b", dtype="uint16", pre=(F32,))),
            outputs=(Out(post=(op5("scale_mean_variance", reference_tensor="b"),)),),
            weights=("pytorch_state_dict",),
            core_fails=OWN_STATS,
        ),
        Case(
            "q05-zmuv",
            inputs=raw,
            outputs=(Out(channels=2, post=(op5("zero_mean_unit_variance", axes=["y", "x"]),)),),
            core_fails=OWN_STATS,
        ),
        Case(
            "q05-fixed-zmuv-uint8",
            inputs=raw,
            outputs=(
                Out(
                    post=(
                        op5("sigmoid"),
                        op5("fixed_zero_mean_unit_variance", mean=0.0, std=0.004),
                        op5("clip", min=0.0, max=255.0),
                        op5("ensure_dtype", dtype="uint8"),
                    ),
                    dtype="uint8",
                ),
            ),
            tolerance=INT_TOLERANCE,
        ),
        Case(
            "q05-3d-sigmoid-up",
            dims=3,
            inputs=(In(),),
            outputs=(Out(post=(op5("sigmoid"),), geometry="up", halo=4),),
            weights=("onnx",),
        ),
        Case(
            "q05-fixed-zmuv-axis",
            inputs=raw,
            outputs=(
                Out(
                    channels=2,
                    post=(
                        op5(
                            "fixed_zero_mean_unit_variance", axis="channel", mean=[1.0, -1.0], std=[2.0, 0.5]
                        ),
                    ),
                ),
            ),
        ),
        Case(
            "q05-clip-percentiles",
            inputs=raw,
            outputs=(Out(post=(op5("clip", min_percentile=10.0, max_percentile=90.0, axes=["y", "x"]),)),),
            core_fails=OWN_STATS,
        ),
        # 0.4 argument forms
        Case(
            "q04-clip",
            "0.4",
            inputs=(In(),),
            outputs=(Out(post=(op4("clip", min=0.0, max=1.0),)),),
        ),
        Case("q04-sigmoid", "0.4", inputs=(In(),), outputs=(Out(post=(op4("sigmoid"),), halo=4),)),
        Case(
            "q04-scale-range-ref",
            "0.4",
            inputs=(In(),),
            outputs=(Out(post=(op4("scale_range", mode="per_sample", axes="yx", reference_tensor="raw"),)),),
        ),
        Case(
            "q04-scale-mean-variance",
            "0.4",
            inputs=(In(),),
            outputs=(
                Out(
                    post=(op4("scale_mean_variance", mode="per_sample", reference_tensor="raw", axes="cyx"),)
                ),
            ),
            weights=("torchscript",),
            core_fails=OWN_STATS,
        ),
        Case(
            "q04-zmuv-binarize",
            "0.4",
            inputs=(In(),),
            outputs=(
                Out(
                    post=(
                        op4("zero_mean_unit_variance", mode="per_sample", axes="cyx"),
                        op4("binarize", threshold=0.5),
                    ),
                    dtype="bool",
                ),
            ),
            tolerance=BOOL_TOLERANCE,
            core_fails=OWN_STATS,
        ),
    ]


CASES: tuple[Case, ...] = (*_geometry_cases(), *_pre_cases(), *_post_cases())
BY_NAME = {c.name: c for c in CASES}
assert len(BY_NAME) == len(CASES), "case names must be unique"


# ------------------------------------------------------------------------------------- the docs

DOC_BEGIN = "<!-- feature table: python -m tests.conformance.matrix docs/conformance.md -->"
DOC_END = "<!-- end of feature table -->"


def feature_table() -> str:
    counts: dict[str, list[str]] = {}
    for c in CASES:
        for f in c.features():
            counts.setdefault(f, []).append(c.name)
    lines = [
        DOC_BEGIN,
        "",
        f"{len(CASES)} generated packages. Every row is supported by emzoo and checked against "
        "bioimageio.core.",
        "",
        "| feature | packages | e.g. |",
        "|---|---:|---|",
    ]
    for f in sorted(counts):
        names = counts[f]
        lines.append(f"| {f} | {len(names)} | `{names[0]}` |")
    return "\n".join([*lines, "", DOC_END])


def render_docs(current: str) -> str:
    """``current`` (docs/conformance.md) with its feature table replaced by the matrix's."""
    head, _, rest = current.partition(DOC_BEGIN)
    _, _, tail = rest.partition(DOC_END)
    return head + feature_table() + tail


def main(argv: list[str]) -> None:
    path = Path(argv[0] if argv else "docs/conformance.md")
    path.write_text(render_docs(path.read_text(encoding="utf-8")), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
