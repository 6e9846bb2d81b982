"""Figures of a counting run that any viewer opens (PNG, Pillow only): an overlay of the detected
particles on the image, and histograms of their diameters.

Sizes scale with the image, so a 2048 px image gets lines and text as readable as a 640 px one:
a circle of the particle's radius (of ``min_distance_px`` without sizes), lines of about 1/500 of
the image's side, text of about 1/45, and a legend with the count.

>>> import numpy as np
>>> from emzoo.tasks.counting import CountResult
>>> result = CountResult(2, np.array([[8.0, 8.0, 1.0], [20.0, 24.0, 0.9]]), diameters=np.array([6.0, 8.0]))
>>> scaled(640), scaled(2048)
(1, 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emzoo.atomic import atomic_path
from emzoo.errors import InputError
from emzoo.tasks.counting import CountResult

__all__ = ["render_overlay", "render_size_histogram", "scaled"]

_YELLOW, _WHITE, _BACKGROUND = (255, 230, 0), (255, 255, 255), (20, 20, 20)


def scaled(side: int, per: int = 500) -> int:
    """A line width (or, with ``per=45``, a text height) for an image whose longer side is ``side``."""
    return max(1, round(side / per))


def _font(height: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=max(10, height))
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _gray(image, axes: str | None) -> np.ndarray:
    """A 2D float view of an image: channels averaged, ``axes`` like ``yx``, ``yxc``, ``cyx``."""
    a = np.asarray(image)
    if axes is None:
        axes = {2: "yx", 3: "yxc" if a.shape[-1] in (3, 4) else "cyx"}.get(a.ndim, "")
    if len(axes) != a.ndim or set(axes) - set("cyx"):
        raise InputError(
            f"an overlay needs a 2D image (axes yx, yxc or cyx), got shape {a.shape}, axes {axes!r}"
        )
    if "c" in axes:
        a = a.astype(np.float32).mean(axis=axes.index("c"))
    return a.astype(np.float32)


def _legend(draw, lines: Sequence[str], side: int) -> None:
    font = _font(scaled(side, 45))
    pad = scaled(side, 150) + 2
    boxes = [draw.textbbox((0, 0), line, font=font) for line in lines]
    width = max(b[2] - b[0] for b in boxes) + 2 * pad
    height = sum(b[3] - b[1] for b in boxes) + (len(lines) + 1) * pad
    draw.rectangle((0, 0, width, height), fill=_BACKGROUND)
    y = pad
    for line, box in zip(lines, boxes, strict=True):
        draw.text((pad - box[0], y - box[1]), line, fill=_YELLOW, font=font)
        y += box[3] - box[1] + pad


def render_overlay(
    image,
    result: CountResult,
    path: str | Path,
    *,
    axes: str | None = None,
    radius: float | None = None,
    nm_per_px: float | None = None,
    color: tuple[int, int, int] = (255, 40, 40),
) -> Path:
    """``<stem>_overlay.png``: the image (grey, stretched between its 0.5 and 99.5 percentiles) with a
    circle of each particle's radius (``radius`` px, or half its diameter when the model gives sizes)
    around every centre and a legend with the count. 2D only."""
    from PIL import Image, ImageDraw

    if result.axes != "yx":
        raise InputError("overlays are drawn for 2D images only")
    g = _gray(image, axes)
    lo, hi = np.percentile(g, [0.5, 99.5])
    grey = (np.clip((g - lo) / max(float(hi - lo), 1e-12), 0, 1) * 255).astype(np.uint8)
    canvas = Image.fromarray(grey).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    side = max(g.shape)
    width = scaled(side)
    default = radius if radius is not None else max(3.0, side / 200)
    radii = result.diameters / 2 if result.diameters is not None else np.full(result.n_centres, default)
    for (y, x), r in zip(result.centres[:, :2], radii, strict=True):
        r = max(float(r), width + 1.0)
        draw.ellipse((x - r, y - r, x + r, y + r), outline=color, width=width)
    lines = [f"{result.count:.0f} particles" if result.method == "peaks" else f"count {result.count:.1f}"]
    if result.diameters is not None and len(result.diameters):
        median = float(np.median(result.diameters))
        size = f"{median * nm_per_px:.3g} nm" if nm_per_px else f"{median:.3g} px"
        lines.append(f"median diameter {size}")
    _legend(draw, lines, side)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)


def render_size_histogram(
    diameters: np.ndarray, path: str | Path, *, title: str, nm_per_px: float | None = None
) -> Path:
    """A histogram of particle diameters (px, or nm when ``nm_per_px`` is given) as a PNG, with the
    count, mean and median in its title lines."""
    from PIL import Image, ImageDraw

    d = np.asarray(diameters, float) * (nm_per_px or 1.0)
    unit = "nm" if nm_per_px else "px"
    w, h, margin = 640, 420, 56
    canvas = Image.new("RGB", (w, h), _WHITE)
    draw = ImageDraw.Draw(canvas)
    font = _font(15)
    stats = f"n = {len(d)}" + (
        f", mean {d.mean():.3g} {unit}, median {np.median(d):.3g} {unit}" if len(d) else ""
    )
    draw.text((margin, 8), title, fill=(0, 0, 0), font=font)
    draw.text((margin, 28), stats, fill=(0, 0, 0), font=font)
    top, bottom, left, right = 56, h - margin + 8, margin, w - 16
    draw.line((left, bottom, right, bottom), fill=(0, 0, 0), width=1)
    draw.line((left, top, left, bottom), fill=(0, 0, 0), width=1)
    if len(d):
        counts, edges = np.histogram(d, bins=min(30, max(5, int(np.sqrt(len(d))))))
        bar = (right - left) / len(counts)
        for k, c in enumerate(counts):
            y0 = bottom - (bottom - top) * c / max(int(counts.max()), 1)
            draw.rectangle((left + k * bar + 1, y0, left + (k + 1) * bar - 1, bottom), fill=(70, 110, 180))
        for value, x in ((edges[0], left), (edges[-1], right)):
            draw.text((x, bottom + 6), f"{value:.3g}", fill=(0, 0, 0), font=font, anchor="mt")
        draw.text((left, top - 2), str(int(counts.max())), fill=(0, 0, 0), font=font, anchor="rb")
    draw.text(((left + right) / 2, h - 6), f"diameter ({unit})", fill=(0, 0, 0), font=font, anchor="mb")
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)
