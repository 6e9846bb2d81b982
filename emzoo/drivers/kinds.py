"""Output kinds: what a package's outputs mean beyond plain tensors, behind a small registry keyed by
the package's ``config.emzoo``, so that the file driver never imports task modules or branches on them.

Every run writes each output tensor (an image, or a one-row CSV value table for outputs without spatial
axes: :mod:`emzoo.drivers.outputs`); a kind adds what its task needs on top, per sample (e.g. the
centres of a counting model) and per run (e.g. a table of all counts). A kind is chosen by
``config.emzoo.output_kind``, else by the first ``config.emzoo`` key that names a registered kind
(``counting``), else ``image``. Register a new kind with :func:`register_output_kind`.

>>> from emzoo.package.spec import ModelSpec
>>> spec = ModelSpec(name="m", description="", format_version="0.5.4", inputs=(), outputs=(), weights={})
>>> output_kind(spec).name
'image'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from emzoo.drivers.options import OutputOptions
from emzoo.errors import PackageError
from emzoo.io.meta import Image
from emzoo.package.spec import ModelSpec


@dataclass
class SampleOutputs:
    """What a kind wrote for one sample, and its row for the run's table (None: no row)."""

    written: list[Path] = field(default_factory=list)
    row: dict[str, Any] | None = None


@dataclass
class RunOutputs:
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Sample:
    """One predicted sample as a kind sees it."""

    image: Image  # the (first) input
    relative: Path  # the input's path relative to what the user named (the row's "file")
    outputs: Mapping[str, Image]  # the model's outputs, as Predictor.predict returns them
    todo: Mapping[str, Path]  # the kind's extra outputs still to write (key -> path)
    base: Path  # OUT/<relative folder>/<stem>: outputs are named <base>_<what><suffix>


class OutputKind(Protocol):
    """A kind of package output: extra files per sample and per run."""

    name: str
    streams: bool  # can its samples be predicted chunk by chunk (no whole-output post-processing)

    def extra_paths(self, base: Path) -> dict[str, Path]:
        """The extra per-sample outputs (key -> path); a sample is skipped when they and the tensors exist."""
        ...

    def finish_sample(self, sample: Sample, options: OutputOptions) -> SampleOutputs: ...

    def finish_run(self, out_dir: Path, rows: list[dict[str, Any]]) -> RunOutputs: ...


class ImageKind:
    """Plain image-to-image (or image-to-value) outputs: nothing beyond the tensors."""

    name = "image"
    streams = True

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def extra_paths(self, base: Path) -> dict[str, Path]:
        return {}

    def finish_sample(self, sample: Sample, options: OutputOptions) -> SampleOutputs:
        return SampleOutputs()

    def finish_run(self, out_dir: Path, rows: list[dict[str, Any]]) -> RunOutputs:
        return RunOutputs()


KindFactory = Callable[[ModelSpec], OutputKind]
# name -> factory, or "module:attribute" of one, imported when a package of that kind is run
_KINDS: dict[str, KindFactory | str] = {
    "image": ImageKind,
    "counting": "emzoo.tasks.counting_files:CountingKind",
    "classification": "emzoo.tasks.classification:ClassificationKind",
}


def register_output_kind(name: str, factory: KindFactory | str) -> None:
    """Make ``config.emzoo.output_kind: NAME`` (or a ``config.emzoo.NAME`` section) select ``factory``."""
    _KINDS[name] = factory


def list_output_kinds() -> list[str]:
    return list(_KINDS)


def _factory(name: str) -> KindFactory:
    entry = _KINDS[name]
    if isinstance(entry, str):
        module, _, attribute = entry.partition(":")
        entry = getattr(importlib.import_module(module), attribute)
        _KINDS[name] = entry
    return entry


def output_kind(spec: ModelSpec) -> OutputKind:
    """The output kind of a package, from its ``config.emzoo``."""
    config = spec.emzoo or {}
    name = config.get("output_kind")
    if name is None:
        name = next((key for key in config if key in _KINDS and key != "image"), "image")
    if name not in _KINDS:
        raise PackageError(
            f"config.emzoo.output_kind {name!r} of {spec.name!r} is not known to this emzoo "
            f"(it knows {', '.join(_KINDS)})"
        )
    return _factory(name)(spec)
