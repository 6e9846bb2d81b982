"""The engine's option records: how to tile (:class:`TileSettings`) and where to run (:class:`DeviceSpec`).

Each is one frozen record passed whole from the CLI, the Python API or napari down to the predictor.

>>> DeviceSpec.parse("cuda:1")
DeviceSpec(kind='cuda', index=1)
>>> str(DeviceSpec.parse("CPU"))
'cpu'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from emzoo.errors import UsageError

DeviceKind = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class TileSettings:
    """User overrides of the tiling; None means: chosen automatically."""

    tile: tuple[int, ...] | None = None  # block (model input) size per tiled axis
    halo: int | None = None  # input pixels of context kept on each interior side
    blend: int | None = None  # overlap (pixels) mixed with linear ramps
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.tile is not None and (not self.tile or any(int(n) < 1 for n in self.tile)):
            raise UsageError(f"{{tile}} {self.tile}: sizes must be positive")
        for name in ("halo", "blend"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise UsageError(f"{{{name}}} {value}: must be 0 or more")
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError("{batch_size} must be at least 1")


@dataclass(frozen=True)
class DeviceSpec:
    """``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``."""

    kind: DeviceKind = "auto"
    index: int | None = None

    @classmethod
    def parse(cls, text: str | DeviceSpec | None) -> DeviceSpec:
        if isinstance(text, DeviceSpec):
            return text
        value = (text or "auto").strip().lower()
        if value in ("auto", "cpu", "cuda"):
            return cls(value)  # type: ignore[arg-type]
        if value.startswith("cuda:") and value[5:].isdigit():
            return cls("cuda", int(value[5:]))
        raise UsageError(f"{{device}} {text!r}: use auto, cpu, cuda or cuda:N")

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"
