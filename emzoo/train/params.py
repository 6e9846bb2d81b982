"""A use case's documented parameters: ``params.yaml`` read, checked and overridden.

Every entry of the file is ``name: {value: ..., help: ...}``; ``help`` is a plain-language
explanation for EM experts (what the parameter does, when to change it), and the trainer refuses a
file where one is missing. Values given on the command line (``--set lr=3e-4``) are converted to
the type of the file's value, never guessed.

>>> parse_value("lr", "3e-4", 1.0e-3)
0.0003
>>> parse_value("flips", "no", True)
False
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emzoo.errors import UsageError

# the parameters the trainer itself reads; every use case's params.yaml defines them
TRAINER_KEYS = (
    "epochs",
    "iterations_per_epoch",
    "batch_size",
    "lr",
    "weight_decay",
    "patience",
    "seed",
    "num_workers",
)
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class Param:
    name: str
    value: Any
    help: str


def load_param_file(path: Path) -> dict[str, Param]:
    """Read ``params.yaml``; each entry needs ``value`` and a non-empty ``help``."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"{path}: cannot read the parameter file ({e})") from e
    if not isinstance(raw, dict) or not raw:
        raise UsageError(f"{path}: expected a mapping 'name: {{value: ..., help: ...}}'")
    params: dict[str, Param] = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict) or set(entry) != {"value", "help"}:
            found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise UsageError(f"{path}: parameter {name!r} needs exactly 'value' and 'help' (found {found})")
        if not isinstance(entry["help"], str) or not entry["help"].strip():
            raise UsageError(f"{path}: parameter {name!r} has no help text; explain it for EM experts")
        value = entry["value"]
        if isinstance(value, str) and _FLOAT_TEXT.match(value):
            raise UsageError(
                f"{path}: {name}: YAML reads {value!r} as text; write a float with a dot (e.g. 1.0e-3)"
            )
        params[str(name)] = Param(str(name), value, " ".join(entry["help"].split()))
    missing = [k for k in TRAINER_KEYS if k not in params]
    if missing:
        raise UsageError(f"{path}: the trainer needs the parameter(s) {', '.join(missing)}")
    return params


def parse_value(name: str, text: str, default: Any) -> Any:
    """Convert ``text`` to the type of ``default`` (bool, int, float, str or list of those)."""
    t = text.strip()
    try:
        if isinstance(default, bool):
            if t.lower() in _TRUE:
                return True
            if t.lower() in _FALSE:
                return False
            raise ValueError
        if isinstance(default, int):
            return int(t)
        if isinstance(default, float):
            value = float(t)
            if not math.isfinite(value):
                raise ValueError
            return value
        if isinstance(default, list):
            items = [s for s in t.strip("[]").split(",") if s.strip()]
            inner = default[0] if default else ""
            return [parse_value(name, s, inner) for s in items]
        if default is None:
            import yaml

            return yaml.safe_load(t)
        return t
    except (ValueError, UsageError):
        kind = "a list" if isinstance(default, list) else type(default).__name__
        raise UsageError(f"{name}={text!r}: expected {kind} like the default {default!r}") from None


def split_assignment(item: str) -> tuple[str, str]:
    """``"lr=3e-4"`` -> ``("lr", "3e-4")``."""
    name, sep, text = item.partition("=")
    if not sep or not name.strip():
        raise UsageError(f"{item!r}: expected KEY=VALUE (e.g. lr=3e-4)")
    return name.strip(), text


def resolve_params(defaults: Mapping[str, Param], overrides: Mapping[str, Any] | Iterable[str] = ()) -> dict:
    """The default values with ``overrides`` applied: a mapping of values (converted if given as
    text) or ``KEY=VALUE`` strings. Unknown keys are an error that lists the known ones."""
    items = overrides.items() if isinstance(overrides, Mapping) else map(split_assignment, overrides)
    params = {name: p.value for name, p in defaults.items()}
    for name, value in items:
        if name not in defaults:
            raise UsageError(f"unknown parameter {name!r} (known: {', '.join(sorted(defaults))})")
        params[name] = parse_value(name, value, defaults[name].value) if isinstance(value, str) else value
    return params


def format_params(defaults: Mapping[str, Param], width: int = 100) -> str:
    """The parameters with their values and explanations, for ``emzoo train USE_CASE --show-params``."""
    import textwrap

    lines = []
    for p in defaults.values():
        lines.append(f"{p.name} = {p.value!r}")
        lines.extend(textwrap.wrap(p.help, width, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(lines)
