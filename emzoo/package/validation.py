"""Load and validate descriptions with bioimageio.spec; turn its summaries into short messages."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from emzoo.errors import PackageError
from emzoo.package.safe_yaml import check_yaml, safe_load

log = logging.getLogger(__name__)

MAX_PROBLEMS_SHOWN = 3


def quiet_bioimageio() -> None:
    """Silence bioimageio's loguru output (emzoo reports its findings itself)."""
    from loguru import logger

    logger.disable("bioimageio.spec")
    logger.disable("bioimageio.core")


def format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(package)"


def problems(summary: Any) -> list[str]:
    """``"field.path: message"`` for every error in a bioimageio ``ValidationSummary``."""
    out = []
    for detail in summary.details:
        for err in detail.errors:
            msg = " ".join(str(err.msg).split())
            if len(msg) > 240:
                msg = msg[:237] + "..."
            out.append(f"{format_loc(err.loc)}: {msg}")
    return out


def one_paragraph(source: str, summary: Any) -> str:
    """What is wrong with a package, in one paragraph that names the fields."""
    found = problems(summary) or [f"validation status {summary.status}"]
    shown = "; ".join(found[:MAX_PROBLEMS_SHOWN])
    more = f" (and {len(found) - MAX_PROBLEMS_SHOWN} more)" if len(found) > MAX_PROBLEMS_SHOWN else ""
    return (
        f"{source} is not a valid bioimage.io model package: {shown}{more}. "
        f"Fix these fields in its rdf.yaml; `emzoo validate {source}` lists every problem."
    )


def load_validated(rdf: Path, source: str, *, perform_io_checks: bool = True) -> Any:
    """The validated ``ModelDescr`` of ``rdf`` in its own spec version, as bioimageio.core tests it
    (spec 0.5, or 0.4, which :mod:`emzoo.package.describe` reads as 0.4), or :class:`PackageError`.

    A 0.4 description that is not valid 0.4 but converts to valid 0.5 is taken as converted.
    bioimageio.spec reads the YAML itself, expanding every alias: the text is checked first."""
    try:
        text = rdf.read_text(encoding="utf-8")
        check_yaml(text, source)
    except (OSError, UnicodeDecodeError) as e:
        raise PackageError(f"{source}: cannot read {rdf.name} ({e})") from e
    quiet_bioimageio()
    from bioimageio.spec import InvalidDescr
    from bioimageio.spec import load_description as load_any

    try:
        descr = load_any(rdf, format_version="discover", perform_io_checks=perform_io_checks)
        if isinstance(descr, InvalidDescr) and _before_05(text, source):
            converted = load_any(rdf, format_version="latest", perform_io_checks=perform_io_checks)
            if not isinstance(converted, InvalidDescr):
                log.warning(
                    "%s: not valid as written; read as converted to spec 0.5 by bioimageio.spec", source
                )
                descr = converted
    except Exception as e:  # bioimageio raises plain errors for unreadable YAML and the like
        raise PackageError(f"{source} cannot be read as a bioimage.io package: {e}") from e
    if isinstance(descr, InvalidDescr):
        raise PackageError(one_paragraph(source, descr.validation_summary))
    if descr.type != "model":
        raise PackageError(f"{source} describes a {descr.type!r}, not a model")
    return descr


def _before_05(text: str, source: str) -> bool:
    """The description declares a format version before 0.5 (0.3, 0.4)."""
    content = safe_load(text, source)
    version = str(content.get("format_version", "")) if isinstance(content, dict) else ""
    return version.startswith(("0.3.", "0.4."))
