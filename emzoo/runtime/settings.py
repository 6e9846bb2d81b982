"""The engine's option records: how to tile (:class:`TileSettings`) and where to run (:class:`DeviceSpec`).

Each is one frozen record passed whole from the CLI, the Python API or napari down to the predictor.

>>> DeviceSpec.parse("cuda:1")
DeviceSpec(kind='cuda', index=1, precision='fp32', calibrate=())
>>> str(DeviceSpec.parse("CPU"))
'cpu'
>>> DeviceSpec.parse("cpu", precision="INT8").precision
'int8'
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from emzoo.errors import UsageError

DeviceKind = Literal["auto", "cpu", "cuda"]
Precision = Literal["fp32", "int8", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "int8", "bf16", "fp16")


@dataclass(frozen=True)
class TileSettings:
    """User overrides of the tiling; None means: chosen automatically."""

    tile: tuple[int, ...] | None = None  # block (model input) size per tiled axis
    halo: int | None = None  # input pixels of context kept on each interior side
    blend: int | None = None  # overlap (pixels) mixed with linear ramps
    batch_size: int | None = None
    # test-time augmentation (outputs averaged over the blocks' flips and 90-degree turns; see
    # emzoo.runtime.augment): None follows the package (config.emzoo.tta), True/False override it
    tta: bool | None = None

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
    """``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``; the numeric ``precision``
    the network runs at there (``fp32``; ``int8``: statically quantized ONNX, calibrated on the
    package's test inputs or on the images of ``calibrate``; ``bf16``/``fp16``: torch weights under
    autocast on CUDA; see :mod:`emzoo.runtime.backends.precision`)."""

    kind: DeviceKind = "auto"
    index: int | None = None
    precision: Precision = "fp32"
    calibrate: tuple[str, ...] = ()  # image files or folders to calibrate int8 on (default: test inputs)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"{{precision}} {self.precision!r}: use {', '.join(PRECISIONS)}")
        if self.calibrate and self.precision != "int8":
            raise UsageError("{calibrate} is for {precision=int8}: leave it out or add that")

    @classmethod
    def parse(
        cls,
        text: str | DeviceSpec | None,
        *,
        precision: str | None = None,
        calibrate: tuple[str, ...] | list[str] | None = None,
    ) -> DeviceSpec:
        """The device of ``text``; ``precision`` and ``calibrate``, when given, replace its own."""
        extra: dict = {}
        if precision is not None:
            extra["precision"] = precision.strip().lower()
        if calibrate:
            extra["calibrate"] = tuple(str(p) for p in calibrate)
        if isinstance(text, DeviceSpec):
            return replace(text, **extra) if extra else text
        value = (text or "auto").strip().lower()
        if value in ("auto", "cpu", "cuda"):
            return cls(value, **extra)  # type: ignore[arg-type]
        if value.startswith("cuda:") and value[5:].isdigit():
            return cls("cuda", int(value[5:]), **extra)
        raise UsageError(f"{{device}} {text!r}: use auto, cpu, cuda or cuda:N")

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"
