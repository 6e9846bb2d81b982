"""Counts and object centres from the density (or centre heat) maps of counting models.

A package *counts* when its ``config.emzoo`` holds a ``counting`` entry (the packager writes it from
``package_module(..., extra_config={"counting": {...}})``)::

    counting:
      output: density          # id of the output map (same spatial axes and size as the input)
      count: integral          # "integral": count = sum of the map (each object adds 1)
                               # "peaks": count = number of centres found
      min_distance_px: 3       # centres are local maxima at least this far apart (px)
      threshold: 0.0015        # ... whose (smoothed) map value is above this
      smooth_sigma_px: 1.0     # Gaussian smoothing of the map before the maxima are searched (0: none)
      sizes: diameter          # optional: id of an output map of particle diameters (px), read at
                               # each centre

Everything here is a pure function of arrays (numpy and scipy): the caller predicts, these turn the
map into a count, a table of centres (``y, x``, ``diameter_px`` when the model gives sizes, ``score``)
and a summary row; :mod:`emzoo.tasks.counting_figures` draws overlays and size histograms.

>>> import numpy as np
>>> density = np.zeros((32, 32), np.float32)
>>> density[8, 8] = density[20, 24] = 1.0
>>> result = count_map(density, CountingConfig(output="density", min_distance_px=2, threshold=0.5))
>>> round(result.count, 3), result.centres[:, :2].tolist()
(2.0, [[8.0, 8.0], [20.0, 24.0]])
"""

from __future__ import annotations

import csv
import io as _io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from emzoo.atomic import write_text_atomic
from emzoo.errors import InputError, PackageError

__all__ = [
    "CountResult",
    "CountingConfig",
    "count_map",
    "count_outputs",
    "counting_config",
    "find_centres",
    "in_image_pixels",
    "nm_per_pixel",
    "summary_row",
    "write_centres_csv",
    "write_counts_csv",
]

CountMethod = Literal["integral", "peaks"]
SUMMARY_COLUMNS = (
    "file",
    "count",
    "mean_diameter_px",
    "median_diameter_px",
    "mean_diameter_nm",
    "median_diameter_nm",
)
_KEYS = {"output", "count", "min_distance_px", "threshold", "smooth_sigma_px", "sizes"}


@dataclass(frozen=True)
class CountingConfig:
    """How a counting package turns its output map into a count and centres (``config.emzoo.counting``)."""

    output: str
    count: CountMethod = "integral"
    min_distance_px: int = 3
    threshold: float = 0.0
    smooth_sigma_px: float = 0.0
    sizes: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "config.emzoo.counting") -> CountingConfig:
        """Checked construction; every problem raises :class:`PackageError` naming the key."""
        if not isinstance(d, Mapping):
            raise PackageError(f"{where} must be a mapping like {{'output': 'density'}}, not {d!r}")
        unknown = sorted(set(d) - _KEYS)
        if unknown:
            raise PackageError(
                f"{where} has unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})"
            )
        if not isinstance(d.get("output"), str) or not d["output"]:
            raise PackageError(
                f"{where}.output must name the output map (e.g. 'density'), got {d.get('output')!r}"
            )
        method = d.get("count", "integral")
        if method not in ("integral", "peaks"):
            raise PackageError(f"{where}.count must be 'integral' or 'peaks', got {method!r}")
        try:
            distance = int(d.get("min_distance_px", 3))
            threshold = float(d.get("threshold", 0.0))
            smooth = float(d.get("smooth_sigma_px", 0.0))
        except (TypeError, ValueError) as e:
            raise PackageError(
                f"{where}: min_distance_px, threshold and smooth_sigma_px must be numbers ({e})"
            ) from None
        if distance < 1:
            raise PackageError(f"{where}.min_distance_px must be >= 1, got {distance}")
        if smooth < 0 or not np.isfinite(threshold):
            raise PackageError(f"{where}: smooth_sigma_px must be >= 0 and threshold finite")
        sizes = d.get("sizes")
        if sizes is not None and (not isinstance(sizes, str) or not sizes):
            raise PackageError(f"{where}.sizes must name the output map of diameters, got {sizes!r}")
        return cls(str(d["output"]), method, distance, threshold, smooth, sizes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "count": self.count,
            "min_distance_px": self.min_distance_px,
            "threshold": self.threshold,
            "smooth_sigma_px": self.smooth_sigma_px,
            **({"sizes": self.sizes} if self.sizes else {}),
        }


@dataclass(frozen=True)
class CountResult:
    """The count of one image and its centres: ``centres`` is ``(n, ndim + 1)``, one row per centre
    with its pixel coordinates (``axes``, e.g. ``y, x``) and the map value there (``score``), highest
    score first; ``diameters`` (px, one per centre) when the model gives sizes."""

    count: float
    centres: np.ndarray
    axes: str = "yx"
    method: CountMethod = "integral"
    diameters: np.ndarray | None = None

    @property
    def n_centres(self) -> int:
        return len(self.centres)


def counting_config(spec) -> CountingConfig | None:
    """The counting settings of a package (a :class:`~emzoo.package.spec.ModelSpec` or an opened
    :class:`~emzoo.package.load.ModelPackage`), or None when it does not count."""
    spec = getattr(spec, "spec", spec)
    entry = (spec.emzoo or {}).get("counting")
    if entry is None:
        return None
    config = CountingConfig.from_dict(entry)
    ids = [t.id for t in spec.outputs]
    if config.output not in ids:
        raise PackageError(
            f"config.emzoo.counting.output {config.output!r} is not an output of {spec.name!r} "
            f"(outputs: {', '.join(ids)})"
        )
    if not spec.output(config.output).spatial_axes:
        raise PackageError(
            f"config.emzoo.counting.output {config.output!r} has no spatial axes: counting needs a map"
        )
    if config.sizes is not None and config.sizes not in ids:
        raise PackageError(
            f"config.emzoo.counting.sizes {config.sizes!r} is not an output of {spec.name!r} "
            f"(outputs: {', '.join(ids)})"
        )
    return config


def _as_map(density) -> np.ndarray:
    """A 2D (y, x) or 3D (z, y, x) float map; leading length-1 axes (batch, channel) are dropped."""
    m = np.asarray(density, dtype=np.float32)
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    if m.ndim not in (2, 3):
        raise InputError(f"a counting map must be 2D (y, x) or 3D (z, y, x), got shape {np.shape(density)}")
    return m


def find_centres(
    density,
    *,
    min_distance_px: int = 3,
    threshold: float = 0.0,
    smooth_sigma_px: float = 0.0,
) -> np.ndarray:
    """Local maxima of a map: ``(n, ndim + 1)`` rows of pixel coordinates and the (smoothed) map value.

    A pixel is a centre when no pixel within ``min_distance_px`` (a square/cubic window) is higher,
    its value is above ``threshold`` and no higher (or equal, earlier) centre lies within that
    window; flat tops count once (their first pixel). Rows are sorted by value, highest first.
    """
    from scipy import ndimage

    if min_distance_px < 1:
        raise ValueError(f"min_distance_px must be >= 1, got {min_distance_px}")
    m = _as_map(density)
    if smooth_sigma_px > 0:
        m = ndimage.gaussian_filter(m, smooth_sigma_px, mode="nearest")
    d = int(min_distance_px)
    peaks = (m == ndimage.maximum_filter(m, size=2 * d + 1, mode="nearest")) & (m > threshold)
    found = np.argwhere(peaks)  # raster order
    if len(found) == 0:
        return np.zeros((0, m.ndim + 1), np.float64)
    labels, _ = ndimage.label(peaks, structure=np.ones((3,) * m.ndim, bool))
    _, first = np.unique(labels[tuple(found.T)], return_index=True)  # one pixel per flat top
    found = found[np.sort(first)]
    scores = m[tuple(found.T)].astype(np.float64)
    # greedy suppression, highest first (ties: first in raster order): equal maxima closer than
    # min_distance_px (e.g. flat tops) keep one centre
    blocked = np.zeros(m.shape, bool)
    keep = []
    for k in np.lexsort((*found.T[::-1], -scores)):
        point = found[k]
        if blocked[tuple(point)]:
            continue
        keep.append(k)
        blocked[tuple(slice(max(c - d, 0), c + d + 1) for c in point)] = True
    return np.column_stack([found[keep].astype(np.float64), scores[keep]])


def count_map(density, config: CountingConfig) -> CountResult:
    """Count and centres of one map, as ``config`` says (the count of ``"integral"`` is the plain sum
    of the unsmoothed map, negative values included, so that noise cancels on average)."""
    m = _as_map(density)
    centres = find_centres(
        m,
        min_distance_px=config.min_distance_px,
        threshold=config.threshold,
        smooth_sigma_px=config.smooth_sigma_px,
    )
    count = float(m.sum(dtype=np.float64)) if config.count == "integral" else float(len(centres))
    return CountResult(count, centres, "yx" if m.ndim == 2 else "zyx", config.count)


def count_outputs(outputs: Mapping[str, Any], config: CountingConfig) -> CountResult:
    """:func:`count_map` of the counting output among a prediction's outputs (arrays or
    :class:`~emzoo.io.meta.Image`, as ``Predictor.predict`` returns them)."""
    for key in (config.output, config.sizes):
        if key is not None and key not in outputs:
            raise InputError(f"the prediction has no output {key!r} (it has: {', '.join(outputs)})")
    value = outputs[config.output]
    heat = _as_map(getattr(value, "data", value))
    result = count_map(heat, config)
    if config.sizes is None:
        return result
    sizes = _as_map(getattr(outputs[config.sizes], "data", outputs[config.sizes]))
    if sizes.shape != heat.shape:
        raise InputError(f"the size map {config.sizes!r} and the map {config.output!r} differ in shape")
    at = tuple(result.centres[:, : sizes.ndim].astype(int).T)
    return replace(result, diameters=np.clip(sizes[at].astype(np.float64), 0, None))


def in_image_pixels(result: CountResult, image, map_image) -> CountResult:
    """``result``, found on ``map_image``, in the pixels of ``image`` (both
    :class:`~emzoo.io.meta.Image`) when the map was predicted on another grid (``rescale="auto"``,
    :mod:`emzoo.runtime.rescale`): with ``f`` image px per map px along an axis (pixel edges
    aligned), a centre ``c`` goes to ``(c + 0.5) * f - 0.5`` and diameters are multiplied by ``f``
    (the geometric mean over the axes); on the same grid ``result`` itself."""
    factors = []
    for a in result.axes:
        n = image.shape[image.meta.axes.index(a)] if a in image.meta.axes else 0
        m = map_image.shape[map_image.meta.axes.index(a)] if a in map_image.meta.axes else 0
        factors.append(n / m if n and m else 1.0)
    if all(f == 1.0 for f in factors):
        return result
    f = np.array(factors)
    centres = result.centres.copy()
    centres[:, : len(f)] = (centres[:, : len(f)] + 0.5) * f - 0.5
    sizes = None if result.diameters is None else result.diameters * float(np.prod(f) ** (1 / len(f)))
    return replace(result, centres=centres, diameters=sizes)


def nm_per_pixel(meta) -> float | None:
    """The pixel size in nm of an image's :class:`~emzoo.io.meta.ImageMeta` (its ``x`` axis), or None
    when the image carries no length calibration."""
    from emzoo.io.units import convert, normalize_unit

    size = (getattr(meta, "pixel_size", None) or {}).get("x")
    unit = normalize_unit(getattr(meta, "unit", None))
    if not size or unit is None:
        return None
    return convert(float(size), unit, "nm")


def write_centres_csv(path: str | Path, result: CountResult, *, nm_per_px: float | None = None) -> Path:
    """``<stem>_centres.csv``: one row per centre, ``y,x,score`` (``z,y,x,score`` in 3D), pixel
    coordinates of the input image (row, column from the top left); with sizes also ``diameter_px``
    and, when the pixel size is known, ``diameter_nm``."""
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    sized = result.diameters is not None
    in_nm = sized and nm_per_px is not None
    writer.writerow(
        [*result.axes, *(["diameter_px"] if sized else []), *(["diameter_nm"] if in_nm else []), "score"]
    )
    ndim = len(result.axes)
    for k, row in enumerate(result.centres):
        size = [f"{result.diameters[k]:.2f}"] if sized else []
        size_nm = [f"{result.diameters[k] * nm_per_px:.4g}"] if in_nm else []
        writer.writerow([*(round(v) for v in row[:ndim]), *size, *size_nm, f"{row[ndim]:.6g}"])
    return write_text_atomic(path, buf.getvalue())


def summary_row(file: str | Path, result: CountResult, *, nm_per_px: float | None = None) -> dict[str, Any]:
    """One row of the summary table: the file, its one ``count`` (rounded to 0.01) and, when the model
    gives sizes, the mean and median particle diameter in px (and nm when the pixel size is known)."""
    row: dict[str, Any] = {"file": str(file), "count": round(result.count, 2)}
    if result.diameters is not None and len(result.diameters):
        mean, median = float(np.mean(result.diameters)), float(np.median(result.diameters))
        row.update(mean_diameter_px=round(mean, 2), median_diameter_px=round(median, 2))
        if nm_per_px is not None:
            row.update(mean_diameter_nm=float(f"{mean * nm_per_px:.4g}"))
            row.update(median_diameter_nm=float(f"{median * nm_per_px:.4g}"))
    return row


def write_counts_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """``counts.csv``: the summary rows (:func:`summary_row`), one per image, in the given order."""
    buf = _io.StringIO()
    # the size columns only where some image has them
    columns = [c for c in SUMMARY_COLUMNS if c in ("file", "count") or any(c in row for row in rows)]
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return write_text_atomic(path, buf.getvalue())
