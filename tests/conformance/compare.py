"""What the differential tests compare, and where: the references bioimageio.core can give for a
package, and the region of an output that borders do not affect.

**Border convention.** bioimageio.core's whole-sample prediction pads the input by the declared halo
(mirrored) and crops it from the output again, and its blockwise prediction pads the image border
the same way; emzoo feeds the image as it is (the network's own padding, as bioimageio.core's
``test_model`` does). So outputs may differ within ``halo + receptive-field radius`` input pixels of
the image border; everything farther in must be equal within the package's tolerance.
"""

from __future__ import annotations

import math

import numpy as np

from tests.conformance.matrix import AXES, BLOCK, TEST_SIZE, Case, Out, input_halo


def _pre_stats(case: Case) -> bool:
    """Statistics in the pre-processing or of reference inputs (bioimageio.core takes them after its
    halo padding in whole-sample prediction)."""
    ids = {"zero_mean_unit_variance", "scale_range", "scale_mean_variance"}
    ops = [op for t in case.inputs for op in t.pre] + [op for o in case.outputs for op in o.post]

    def has_stats(op: dict) -> bool:
        kw = op.get("kwargs") or {}
        name = op.get("id") or op.get("name")
        if name == "clip":
            return any(k in kw for k in ("min_percentile", "max_percentile"))
        if name == "zero_mean_unit_variance" and kw.get("mode") == "fixed":
            return False
        return name in ids

    pre = [op for t in case.inputs for op in t.pre]
    post_refs = [op for op in ops if (op.get("kwargs") or {}).get("reference_tensor")]
    return any(has_stats(op) for op in (*pre, *post_refs))


def references(case: Case) -> dict[str, str | None]:
    """Which bioimageio.core predictions of the large image serve as reference: ``whole``,
    ``blocks`` and ``windows`` (whole-sample calls on test-size windows), each with None or the
    reason it does not apply (a documented difference, see docs/conformance.md)."""
    halo = any(o.halo for o in case.outputs)
    why: dict[str, str | None] = {"whole": None, "blocks": None, "windows": None}
    if case.fixed:
        why["whole"] = "a fixed-size input takes only that size"
    elif halo and case.spec == "0.5" and _pre_stats(case):
        why["whole"] = "bioimageio.core pads by the halo before it computes the statistics"
    if case.spec == "0.4":
        why["blocks"] = "bioimageio.core predicts 0.4 descriptions whole only"
    elif not case.halo_covers_radius:
        why["blocks"] = "bioimageio.core's blocks have only the declared halo as context"
    elif any(o.geometry == "crop2" for o in case.outputs):
        why["blocks"] = "bioimageio.core cannot tile outputs smaller than their input"
    elif any(o.channel_type == "index" for o in case.outputs):
        why["blocks"] = "bioimageio.core cannot tile outputs with an index axis"
    if not case.fixed:
        why["windows"] = "needed for fixed-size inputs only"
    return why


def block_shape(case: Case) -> dict[str, int]:
    edge = TEST_SIZE[case.dims][0] if case.fixed else BLOCK[case.dims]
    return dict.fromkeys(AXES[case.dims], edge)


def ratio(o: Out) -> float:
    return {"up": 2.0, "down": 0.5}.get(o.geometry, 1.0)


def margin(case: Case, o: Out) -> int:
    """Output pixels next to each image border that may differ (see the border convention)."""
    return math.ceil(ratio(o) * (case.radius + input_halo(o) + 1))


def interior(case: Case, o: Out, data: np.ndarray) -> np.ndarray:
    """``data`` (model axes, batch first) without :func:`margin` pixels on every spatial side."""
    m = margin(case, o)
    first = data.ndim - case.dims
    index = tuple(slice(m, -m) if d >= first else slice(None) for d in range(data.ndim))
    return data[index]


def windows(case: Case, shape: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """Test-size windows of an image of ``shape`` (spatial): at its start, its middle and its end."""
    size = TEST_SIZE[case.dims]
    out = []
    for where in (0.0, 0.5, 1.0):
        out.append(
            tuple(
                slice(int((n - s) * where), int((n - s) * where) + s)
                for n, s in zip(shape, size, strict=True)
            )
        )
    return out
