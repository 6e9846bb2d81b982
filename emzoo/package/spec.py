"""emzoo's own, light description of a model: plain dataclasses, no bioimageio import.

Built once from a validated bioimage.io description (see :mod:`emzoo.package.describe`), cached as
JSON, and used by everything on the prediction path, so that predicting never imports bioimageio.spec.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

AxisType = Literal["batch", "channel", "index", "time", "space"]
SPATIAL_TYPES = ("space", "time")


@dataclass(frozen=True)
class SizeRef:
    """The axis size follows another tensor's axis: ``size = ref_size * ref_scale / scale + offset``."""

    tensor: str
    axis: str
    offset: int = 0


@dataclass(frozen=True)
class SizeRule:
    """The sizes one axis accepts: ``fixed``, or ``min + k * step``: the one tile-size rule of emzoo
    (runtime tiling, package description and packaging all use it).

    >>> SizeRule(min=64, step=16).valid(70), SizeRule(min=64, step=16).valid_below(95)
    (80, 80)
    """

    fixed: int | None = None
    min: int | None = None
    step: int | None = None

    def valid(self, n: int) -> int:
        """The smallest accepted size >= n (a fixed size is what it is)."""
        if self.fixed is not None:
            return self.fixed
        lo, step = self.min or 1, self.step or 0
        if n <= lo or step == 0:
            return lo
        return lo + math.ceil((n - lo) / step) * step

    def valid_below(self, n: int) -> int:
        """The largest accepted size <= n (at least the smallest accepted size)."""
        if self.fixed is not None:
            return self.fixed
        lo, step = self.min or 1, self.step or 0
        if n <= lo or step == 0:
            return lo
        return lo + (n - lo) // step * step

    def accepts(self, n: int) -> bool:
        if self.fixed is not None:
            return n == self.fixed
        lo, step = self.min or 1, self.step or 0
        return n == lo if step == 0 else n >= lo and (n - lo) % step == 0

    def candidates(self, lo: int, hi: int) -> list[int]:
        """Accepted sizes in [lo, hi] (at least the smallest accepted size >= lo)."""
        if self.fixed is not None:
            return [self.fixed]
        first = self.valid(lo)
        step = self.step or 0
        if step == 0:
            return [first]
        return list(range(first, max(hi, first) + 1, step))

    def natural_alignment(self) -> int:
        """The spacing of block starts that keeps pooling windows aligned."""
        if self.fixed is not None:
            return min(self.fixed & -self.fixed, 32)  # largest power of two dividing it, capped
        if self.step:
            return self.step if (self.min or 0) % self.step == 0 else math.gcd(self.step, self.min or 0) or 1
        return 1


@dataclass(frozen=True)
class Axis:
    id: str
    type: AxisType
    size: int | None = None  # a fixed size
    min: int | None = None  # a parameterized size: min + n * step
    step: int | None = None
    ref: SizeRef | None = None
    data_dependent: bool = False
    scale: float = 1.0
    unit: str | None = None
    halo: int = 0
    channel_names: tuple[str, ...] = ()
    concatenable: bool = False

    @property
    def is_spatial(self) -> bool:
        return self.type in SPATIAL_TYPES

    @property
    def rule(self) -> SizeRule:
        """The sizes this axis accepts (sizes that follow another tensor's axis: any size)."""
        if self.size is not None:
            return SizeRule(fixed=self.size)
        if self.min is not None:
            return SizeRule(min=self.min, step=self.step)
        return SizeRule(min=1, step=1)

    def describe_size(self) -> str:
        if self.size is not None:
            return str(self.size)
        if self.min is not None:
            return f"{self.min}+{self.step}n" if self.step else str(self.min)
        if self.ref is not None:
            off = f"{self.ref.offset:+d}" if self.ref.offset else ""
            return f"={self.ref.tensor}.{self.ref.axis}{off}"
        return "any"


@dataclass(frozen=True)
class Op:
    """One pre- or post-processing step: its spec id and keyword arguments."""

    id: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TensorSpec:
    id: str
    axes: tuple[Axis, ...]
    dtype: str = "float32"
    processing: tuple[Op, ...] = ()
    test_tensor: str | None = None
    sample_tensor: str | None = None
    description: str = ""
    optional: bool = False

    def axis(self, axis_id: str) -> Axis:
        for a in self.axes:
            if a.id == axis_id:
                return a
        raise KeyError(f"tensor {self.id!r} has no axis {axis_id!r}")

    @property
    def axis_ids(self) -> tuple[str, ...]:
        return tuple(a.id for a in self.axes)

    @property
    def spatial_axes(self) -> tuple[Axis, ...]:
        return tuple(a for a in self.axes if a.is_spatial)

    @property
    def n_channels(self) -> int | None:
        for a in self.axes:
            if a.type == "channel":
                return len(a.channel_names) or a.size
        return None

    def describe_axes(self) -> str:
        parts = []
        for a in self.axes:
            if a.type == "batch":
                parts.append("batch")
            elif a.type == "channel":
                parts.append(f"channel({self.n_channels})")
            else:
                parts.append(f"{a.id}[{a.describe_size()}]")
        return ", ".join(parts)


@dataclass(frozen=True)
class Architecture:
    callable: str
    source: str | None = None  # a Python file inside the package
    sha256: str | None = None
    import_from: str | None = None  # or an importable module
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Weights:
    format: str
    source: str  # path relative to the package root
    sha256: str | None = None
    architecture: Architecture | None = None
    external_data: str | None = None
    external_data_sha256: str | None = None
    opset_version: int | None = None
    parent: str | None = None
    strict: bool = True


@dataclass(frozen=True)
class Comparison:
    """The outcome of :meth:`Tolerance.compare`."""

    ok: bool
    max_abs_diff: float
    mismatched: int
    size: int
    detail: str


@dataclass(frozen=True)
class Tolerance:
    """A package's reproducibility promise (bioimage.io's rule): elements with
    ``|actual - expected| > atol + rtol * |expected|`` may be at most ``mismatched_per_million``.

    The one tolerance record of emzoo: ``emzoo test`` checks packages with it and the packager writes it.

    >>> import numpy as np
    >>> Tolerance(atol=0.1).compare(np.array([1.0, 2.05]), np.array([1.0, 2.0])).ok
    True
    """

    rtol: float = 1e-3
    atol: float = 1e-3
    mismatched_per_million: int = 100
    output_ids: tuple[str, ...] = ()
    weights_formats: tuple[str, ...] = ()

    def applies(self, weights_format: str, output_id: str) -> bool:
        return (not self.weights_formats or weights_format in self.weights_formats) and (
            not self.output_ids or output_id in self.output_ids
        )

    def compare(self, actual, expected) -> Comparison:
        """Compare two arrays under this tolerance (shapes must match)."""
        import numpy as np

        actual, expected = np.asarray(actual), np.asarray(expected)
        if actual.shape != expected.shape:
            detail = f"shape {actual.shape}, expected {expected.shape}"
            return Comparison(False, float("inf"), int(expected.size), int(expected.size), detail)
        e = expected.astype(np.float64)
        diff = np.abs(actual.astype(np.float64) - e)
        mismatched = int(np.count_nonzero(diff > self.atol + self.rtol * np.abs(e)))
        ppm = mismatched / max(e.size, 1) * 1e6
        top = float(diff.max(initial=0.0))
        detail = (
            f"max |diff| {top:.2e}, {mismatched} of {e.size} elements off "
            f"(rtol {self.rtol:g}, atol {self.atol:g})"
        )
        return Comparison(ppm <= self.mismatched_per_million, top, mismatched, int(e.size), detail)


WEIGHT_PRIORITY = ("onnx", "torchscript", "pytorch_state_dict")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    format_version: str  # as written in the package (0.4.x packages are converted on load)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    weights: dict[str, Weights]
    tolerances: tuple[Tolerance, ...] = ()
    license: str | None = None
    authors: tuple[str, ...] = ()
    cite: tuple[dict[str, str], ...] = ()
    tags: tuple[str, ...] = ()
    documentation: str | None = None
    covers: tuple[str, ...] = ()
    training_data: str | None = None
    id: str | None = None
    version: str | None = None
    evaluations: tuple[dict[str, Any], ...] = ()
    emzoo: dict[str, Any] = field(default_factory=dict)  # config.emzoo: training statistics etc.

    def input(self, tensor_id: str) -> TensorSpec:
        return _by_id(self.inputs, tensor_id, "input")

    def output(self, tensor_id: str) -> TensorSpec:
        return _by_id(self.outputs, tensor_id, "output")

    def tensor(self, tensor_id: str) -> TensorSpec:
        for t in (*self.inputs, *self.outputs):
            if t.id == tensor_id:
                return t
        raise KeyError(tensor_id)

    def tolerance(self, weights_format: str, output_id: str) -> Tolerance:
        for t in self.tolerances:
            if t.applies(weights_format, output_id):
                return t
        return Tolerance()

    def weight_formats(self) -> list[str]:
        """Formats present, in emzoo's order of preference."""
        known = [f for f in WEIGHT_PRIORITY if f in self.weights]
        return known + [f for f in self.weights if f not in known]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        def axis(a: dict) -> Axis:
            ref = SizeRef(**a["ref"]) if a.get("ref") else None
            return Axis(**{**a, "ref": ref, "channel_names": tuple(a.get("channel_names", ()))})

        def tensor(t: dict) -> TensorSpec:
            return TensorSpec(
                **{
                    **t,
                    "axes": tuple(axis(a) for a in t["axes"]),
                    "processing": tuple(Op(**p) for p in t["processing"]),
                }
            )

        def weights(w: dict) -> Weights:
            arch = Architecture(**w["architecture"]) if w.get("architecture") else None
            return Weights(**{**w, "architecture": arch})

        return cls(
            **{
                **d,
                "inputs": tuple(tensor(t) for t in d["inputs"]),
                "outputs": tuple(tensor(t) for t in d["outputs"]),
                "weights": {k: weights(w) for k, w in d["weights"].items()},
                "tolerances": tuple(
                    Tolerance(
                        **{
                            **t,
                            "output_ids": tuple(t["output_ids"]),
                            "weights_formats": tuple(t["weights_formats"]),
                        }
                    )
                    for t in d["tolerances"]
                ),
                "authors": tuple(d["authors"]),
                "cite": tuple(d["cite"]),
                "tags": tuple(d["tags"]),
                "covers": tuple(d["covers"]),
                "evaluations": tuple(d["evaluations"]),
            }
        )


def _by_id(tensors: tuple[TensorSpec, ...], tensor_id: str, kind: str) -> TensorSpec:
    for t in tensors:
        if t.id == tensor_id:
            return t
    raise KeyError(f"the model has no {kind} tensor {tensor_id!r}")
