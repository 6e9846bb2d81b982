"""What a package says about its network: the tensors (:class:`TensorInfo`) and the metadata
(:class:`PackagingInfo`) that :func:`~emzoo.packaging.build.package_module` turns into a bioimage.io
description.

A tensor's processing is declared once, here, and means the same everywhere: the package writes
it, emzoo's runtime and bioimage.io run it, and training normalises its inputs with
:meth:`TensorInfo.apply_processing` (the same :mod:`emzoo.runtime.processing` code), so that a
model is trained on exactly what its package will feed it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# predict(image: np.ndarray with the input's axes, tta=None) -> {output id: np.ndarray}; tta: test-time
# augmentation on (True), off (False) or as the package asks (None)
PredictFn = Callable[..., dict[str, np.ndarray]]

FLOAT32 = {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}
AXIS_IDS = {"c": "channel", "i": "index"}  # bioimage.io axis ids of the letters that are not spatial


def with_float32_end(ops: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``ops`` ending in an explicit ``ensure_dtype float32`` (as the package declares them).

    bioimageio.spec appends ``ensure_dtype(<declared data type>)`` to preprocessing that does not end
    with ensure_dtype/binarize; declared ``uint8`` data would then wrap normalised values into 0..255.
    """
    out = [{"id": op["id"], "kwargs": dict(op.get("kwargs") or {})} for op in ops]
    if not out or out[-1] != FLOAT32:
        out.append(dict(FLOAT32))
    return out


def axis_ids(axes: str) -> tuple[str, ...]:
    """bioimage.io axis ids (without batch) for axis letters like ``"cyx"`` or ``"ci"``.

    >>> axis_ids("cyx")
    ('channel', 'y', 'x')
    """
    return tuple(AXIS_IDS.get(a, a) for a in axes)


@dataclass(frozen=True)
class TensorInfo:
    """How one package tensor looks (without batch); ``axes`` like ``"cyx"``, ``"czyx"`` or ``"c"``
    (for image-to-value outputs ``"c"`` or ``"ci"``)."""

    id: str
    axes: str
    channel_names: tuple[str, ...]
    description: str = ""
    processing: tuple[dict[str, Any], ...] = ()  # spec 0.5 ops: {"id": ..., "kwargs": {...}}
    data_range: tuple[float | None, float | None] = (None, None)

    def apply_processing(self, array: np.ndarray) -> np.ndarray:
        """``processing`` applied to one image, exactly as the package runs it (float32 out).

        ``array`` has this tensor's axes, without batch; a single-channel image may omit ``c`` (it
        comes back without it). For an input this is the package's preprocessing: training data
        normalised with it matches what the packaged model is fed.

        >>> double = ({"id": "scale_linear", "kwargs": {"gain": 2.0}},)
        >>> TensorInfo("raw", "cyx", ("raw",), processing=double).apply_processing(np.ones((2, 2))).tolist()
        [[2.0, 2.0], [2.0, 2.0]]
        """
        from emzoo.package.spec import Op
        from emzoo.runtime import processing

        arr = np.asarray(array)
        squeeze = arr.ndim == len(self.axes) - 1 and "c" in self.axes and len(self.channel_names) == 1
        if squeeze:
            arr = np.expand_dims(arr, self.axes.index("c"))
        if arr.ndim != len(self.axes):
            raise ValueError(
                f"tensor {self.id!r} has axes {self.axes!r}: an image of shape {np.shape(array)} does not fit"
            )
        ops = [Op(op["id"], op["kwargs"]) for op in with_float32_end(self.processing)]
        out = processing.apply(ops, processing.Tensor(arr, axis_ids(self.axes)))
        return out.squeeze(self.axes.index("c")) if squeeze else out


@dataclass(frozen=True)
class PackagingInfo:
    """Everything a package needs besides weights, test tensors and metrics."""

    name: str
    description: str
    task: str  # e.g. "semantic segmentation", "counting", "denoising"
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    authors: tuple[dict[str, str], ...]  # {"name": ..., "affiliation": ...}
    license: str
    cite: tuple[dict[str, str], ...]  # {"text": ..., "doi": ...} or {"text": ..., "url": ...}
    tags: tuple[str, ...]
    pixel_size: dict[str, float]  # of the training data, per spatial axis letter; {} if uncalibrated
    pixel_unit: str | None  # canonical unit name ("nanometer", "angstrom", ...); None if uncalibrated
    training_data: dict[str, str]  # {"name": ..., "source": ..., "license": ..., "split": ...}
    intended_use: str
    limitations: str
    extra_card_sections: dict[str, str] = field(default_factory=dict)
