"""Cover images (PNG, 2:1) rendered from a real input and the model's output on it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _plane(data: np.ndarray, axes: str) -> np.ndarray:
    """A 2D view for display: first channel, middle z slice."""
    arr = np.asarray(data, dtype=np.float32)
    letters = axes
    if "c" in letters:
        arr = np.take(arr, 0, axis=letters.index("c"))
        letters = letters.replace("c", "")
    while arr.ndim > 2:
        arr = np.take(arr, arr.shape[0] // 2, axis=0)
    return arr


def _limits(arr: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(arr, [0.5, 99.5])
    return (float(lo), float(hi)) if hi > lo else (float(arr.min()), float(arr.max()) + 1e-6)


def render_cover(
    path: Path,
    image: np.ndarray,
    image_axes: str,
    output: np.ndarray,
    output_axes: str,
    *,
    title_in: str = "input",
    title_out: str = "output",
    channel_names: Sequence[str] = (),
) -> Path:
    """Input beside output: an image for image-to-image models, a bar chart of the values otherwise."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 4), dpi=80)
    shown = _plane(image, image_axes)
    left.imshow(shown, cmap="gray", vmin=_limits(shown)[0], vmax=_limits(shown)[1])
    left.set_title(title_in, fontsize=11)
    left.axis("off")
    spatial = any(a in output_axes for a in "zyx")
    if spatial:
        out = _plane(output, output_axes)
        right.imshow(out, cmap="magma", vmin=_limits(out)[0], vmax=_limits(out)[1])
        right.axis("off")
    else:
        values = np.asarray(output, dtype=np.float64).reshape(-1)
        names = (
            list(channel_names) if len(channel_names) == values.size else [str(i) for i in range(values.size)]
        )
        positions = np.arange(values.size)
        right.barh(positions, values, color="#d95f02")
        right.set_yticks(positions, names, fontsize=9)
        right.invert_yaxis()
        for y, v in zip(positions, values, strict=True):
            right.text(v, y, f" {v:.3g}", va="center", fontsize=9)
        right.spines[["top", "right"]].set_visible(False)
    right.set_title(title_out, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
