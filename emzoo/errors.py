"""Errors meant for the user: each message says what failed and how to fix it.

Messages name the parameter to change as ``{name}`` or ``{name=value}``: the library shows the
Python name (``tile``, ``stream=False``), the CLI the flag (``--tile``, ``--no-stream``; see
``emzoo.cli.options``), so no module below ``emzoo.cli`` knows a flag.

>>> str(UsageError("{tile} 100: the model takes 96+8k px along x"))
'tile 100: the model takes 96+8k px along x'
>>> UsageError("run it in memory ({stream=False})").render({"stream=False": "--no-stream"})
'run it in memory (--no-stream)'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

PARAMETER = re.compile(r"(?<!\{)\{([a-z][a-z0-9_]*)(?:=([^{}\s]+))?\}(?!\})")
_ESCAPED = re.compile(r"\{\{|\}\}")
Names = Mapping[str, str] | Callable[[str, str | None], str | None]


def render(template: str, names: Names | None = None) -> str:
    """``template`` with each ``{name}`` / ``{name=value}`` replaced: ``names`` maps ``name`` or
    ``name=value`` to what to show, or is a function ``(name, value) -> text | None``; without it (or
    where it has no entry) the Python name is shown.

    >>> render("use a smaller {tile} or {stream=False}")
    'use a smaller tile or stream=False'
    """

    def sub(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        plain = m.group(0)[1:-1]
        if names is None:
            return plain
        if callable(names):
            shown = names(name, value)
        else:
            shown = names.get(plain, names.get(name))
            if shown is not None and value is not None and plain not in names:
                shown = f"{shown} {value}"
        return shown if shown is not None else plain

    return _ESCAPED.sub(lambda m: m.group(0)[0], PARAMETER.sub(sub, template))


def literal(text: object) -> str:
    """``text`` (a path, a user's value) escaped for a message template, so that braces in it are
    shown as they are and never taken for a parameter.

    >>> str(InputError(f"{literal('in/{tile}.tif')}: not an image"))
    'in/{tile}.tif: not an image'
    """
    return str(text).replace("{", "{{").replace("}", "}}")


class EmzooError(Exception):
    """Base class of errors that the CLI prints as one message, without a traceback."""

    exit_code = 1

    @property
    def template(self) -> str:
        return str(self.args[0]) if self.args else ""

    def parameters(self) -> list[str]:
        """The parameters the message names (``["tile"]``)."""
        return [m.group(1) for m in PARAMETER.finditer(self.template)]

    def render(self, names: Names | None = None) -> str:
        """The message with its parameters shown through ``names`` (see :func:`render`)."""
        return render(self.template, names)

    def __str__(self) -> str:
        return render(self.template)


class UsageError(EmzooError):
    """The command was called wrongly (bad option values, missing inputs)."""

    exit_code = 2


class InputError(EmzooError):
    """An input image cannot be read or does not fit the model."""


class PackageError(EmzooError):
    """A model package is invalid, unsafe, or its files do not match their hashes."""


class BackendError(EmzooError):
    """A weight format cannot be run (missing framework, device, or weights)."""
