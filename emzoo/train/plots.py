"""PNG plots of a run: loss and metric curves (``plots/``) and validation predictions (``samples/``).

Curves are drawn on matplotlib's Agg canvas directly (no pyplot), so the trainer neither needs a
display nor changes the backend of a notebook it runs in. Samples are written with Pillow at full
resolution (input | target | prediction, or the input with the target and prediction as text when
they are values such as a class), which is faster and shows every pixel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # a layout engine, not fixed margins: log-scale tick labels (2 x 10^-1) are wider than any fixed
    # margin guesses, and fixed margins cut them and the axis label off
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    tmp.replace(path)


def _epoch_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _column(rows: Sequence[Mapping[str, object]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if value not in (None, ""):
            xs.append(int(row["epoch"]))
            ys.append(float(value))
    return xs, ys


def plot_loss(rows: Sequence[Mapping[str, object]], path: Path) -> None:
    """Training and validation loss per epoch (log scale when all values are positive), as a PNG."""
    _save(loss_figure(rows), path)


def loss_figure(rows: Sequence[Mapping[str, object]]):
    """The matplotlib ``Figure`` of :func:`plot_loss`."""
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    positive = True
    for key, label in (("train_loss", "training"), ("val_loss", "validation")):
        xs, ys = _column(rows, key)
        ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label)
        positive = positive and all(y > 0 for y in ys)
    if positive and rows:
        ax.set_yscale("log")
    _epoch_axis(ax)
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def plot_metrics(
    rows: Sequence[Mapping[str, object]], names: Sequence[str], path: Path, *, best_epoch=None
) -> None:
    """One panel per validation metric (``val_<name>`` columns), the best epoch marked, as a PNG."""
    _save(metrics_figure(rows, names, best_epoch=best_epoch), path)


def metrics_figure(rows: Sequence[Mapping[str, object]], names: Sequence[str], *, best_epoch=None):
    """The matplotlib ``Figure`` of :func:`plot_metrics`."""
    fig = _figure(4 * max(len(names), 1), 3.5)
    axes = fig.subplots(1, max(len(names), 1), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=False):
        xs, ys = _column(rows, f"val_{name}")
        ax.plot(xs, ys, marker="." if len(xs) < 30 else None)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.6", linestyle="--", linewidth=1)
        ax.set_title(name)
        _epoch_axis(ax)
        ax.grid(alpha=0.3)
    return fig


def _show(array: np.ndarray) -> np.ndarray | None:
    """A 2D uint8 view of a sample array (first channel, middle slice), or None if it is not an image.

    Values in [0, 1] (masks, probabilities) map to black..white as they are; others are stretched
    between their 0.5 and 99.5 percentiles.
    """
    a = np.asarray(array, np.float32)
    while a.ndim > 2:
        a = a[a.shape[0] // 2] if a.ndim > 3 else a[0]
    if a.ndim != 2 or a.size == 0:
        return None
    if a.min() >= 0 and a.max() <= 1:
        lo, hi = 0.0, 1.0
    else:
        lo, hi = np.percentile(a, [0.5, 99.5])
    scaled = (a - lo) / max(hi - lo, 1e-12)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)


def _values(array: np.ndarray) -> str:
    """A short text for a target or prediction that is not an image (a class index, class scores)."""
    a = np.asarray(array, np.float64).reshape(-1)
    if a.size == 1:
        return f"{a[0]:.4g}"
    if a.size <= 16:
        return f"argmax {int(np.argmax(a))} of [" + ", ".join(f"{v:.3g}" for v in a) + "]"
    return f"{a.size} values, mean {a.mean():.4g}"


def plot_sample(image: np.ndarray, target: np.ndarray, prediction: np.ndarray, path: Path) -> bool:
    """Input | target | prediction side by side at full resolution (first channel; middle slice of
    3D data), as a grayscale PNG. A target or prediction that is not an image of the input's size (a
    class, a count, class scores) is written as text under the input instead. Returns False (and
    writes nothing) when the input is not an image.
    """
    from PIL import Image, ImageDraw

    views = [_show(a) for a in (image, target, prediction)]
    if views[0] is None:
        return False
    if any(v is None for v in views) or len({v.shape for v in views}) > 1:
        lines = [f"target: {_values(target)}", f"prediction: {_values(prediction)}"]
        width = max(views[0].shape[1], 8 * max(len(line) for line in lines))
        row = np.full((views[0].shape[0] + 14 * len(lines) + 4, width), 255, np.uint8)
        row[: views[0].shape[0], : views[0].shape[1]] = views[0]
        canvas = Image.fromarray(row)
        draw = ImageDraw.Draw(canvas)
        for i, line in enumerate(lines):
            draw.text((2, views[0].shape[0] + 2 + 14 * i), line, fill=0)
    else:
        gap = np.full((views[0].shape[0], 4), 255, np.uint8)
        canvas = Image.fromarray(np.concatenate([views[0], gap, views[1], gap, views[2]], axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    canvas.save(tmp, format="PNG")
    tmp.replace(path)
    return True
