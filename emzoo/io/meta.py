"""What a reader knows about an image besides its pixels."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ImageMeta:
    """Axes and physical calibration of an image.

    ``axes`` names each array dimension with one letter: ``z``, ``y``, ``x`` for space,
    ``c`` for channels, ``t`` for time (e.g. ``"yx"``, ``"zyx"``, ``"yxc"`` for RGB).
    ``pixel_size`` maps a spatial axis letter to its size per pixel in ``unit``.
    """

    axes: str
    pixel_size: dict[str, float] = field(default_factory=dict)
    unit: str | None = None
    source: Path | None = None
    format: str = ""
    header: dict[str, Any] = field(default_factory=dict)

    def with_axes(self, axes: str) -> ImageMeta:
        """The same calibration for a re-arranged array (axes that disappear lose their size)."""
        return replace(self, axes=axes, pixel_size={a: s for a, s in self.pixel_size.items() if a in axes})


@dataclass(frozen=True)
class Image:
    """An array (numpy or lazy: memmap, zarr, dask) plus its metadata."""

    data: Any
    meta: ImageMeta

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)
