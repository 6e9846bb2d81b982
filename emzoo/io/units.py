"""Length units: one canonical spelling (bioimage.io's space units) and conversions."""

from __future__ import annotations

_METERS = {
    "picometer": 1e-12,
    "angstrom": 1e-10,
    "nanometer": 1e-9,
    "micrometer": 1e-6,
    "millimeter": 1e-3,
    "centimeter": 1e-2,
    "meter": 1.0,
}

_ALIASES = {
    "pm": "picometer",
    "å": "angstrom",
    "a": "angstrom",
    "ang": "angstrom",
    "angstroem": "angstrom",
    "\u212b": "angstrom",  # the Angstrom sign
    "nm": "nanometer",
    "um": "micrometer",
    "µm": "micrometer",
    "μm": "micrometer",
    "micron": "micrometer",
    "\\u00b5m": "micrometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
}


def normalize_unit(unit: str | None) -> str | None:
    """``"nm"``, ``"Å"``, ``"µm"``... to ``"nanometer"``, ``"angstrom"``, ``"micrometer"``.

    None if the unit is unknown.
    """
    if unit is None:
        return None
    key = str(unit).strip().lower()
    if key in _METERS:
        return key
    key = key.rstrip("s") if key.endswith(("meters", "ers")) else key
    if key in _METERS:
        return key
    return _ALIASES.get(key)


def convert(value: float, unit: str, to: str) -> float:
    """Convert a length between canonical or aliased units."""
    src, dst = normalize_unit(unit), normalize_unit(to)
    if src is None or dst is None:
        raise ValueError(f"unknown length unit {unit!r} or {to!r}")
    return value * _METERS[src] / _METERS[dst]


def short_unit(unit: str | None) -> str:
    """A short label for humans: ``nanometer`` -> ``nm``."""
    return {
        "picometer": "pm",
        "angstrom": "Å",
        "nanometer": "nm",
        "micrometer": "µm",
        "millimeter": "mm",
        "centimeter": "cm",
        "meter": "m",
    }.get(unit or "", unit or "px")
