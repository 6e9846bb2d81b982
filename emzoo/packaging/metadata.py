"""Check a :class:`PackagingInfo` before any work starts, and turn its parts into bioimageio.spec objects.

Every problem is collected and reported at once, each naming the field and the fix, so that a
packaging run does not fail on the first of several missing fields after minutes of export work.
"""

from __future__ import annotations

import logging
import re
import string
import typing
from typing import Any

from emzoo.packaging.export import PackagingError
from emzoo.packaging.info import PackagingInfo, TensorInfo

log = logging.getLogger(__name__)

NAME_CHARS = set(string.ascii_letters + string.digits + "_+- ()")
SPATIAL = "zyx"
AUTHOR_KEYS = ("name", "affiliation", "email", "orcid")


def _space_units() -> tuple[str, ...]:
    from bioimageio.spec.model import v0_5

    return typing.get_args(v0_5.SpaceUnit)


def is_license(value: str) -> bool:
    from bioimageio.spec._internal.license_id import LicenseId

    try:
        LicenseId(value)
    except ValueError:
        return False
    return True


def is_url(value: str | None) -> bool:
    return bool(value) and re.match(r"^https?://[^\s/]+\.[^\s]+$", str(value)) is not None


def _tensor_problems(kind: str, i: int, t: TensorInfo, spatial: str | None) -> list[str]:
    where = f"PackagingInfo.{kind}[{i}] ({t.id!r})"
    out = []
    if not re.fullmatch(r"[a-z0-9_]+", t.id or ""):
        out.append(f"{where}.id must be lower-case letters, digits or _ (e.g. 'raw', 'probability')")
    axes = t.axes or ""
    bad = [a for a in axes if a not in "czyxi"]
    if bad or len(set(axes)) != len(axes):
        out.append(f"{where}.axes={axes!r}: use each of c, z, y, x (and i for an index axis) at most once")
    if "c" not in axes:
        out.append(f"{where}.axes={axes!r} has no channel axis: add 'c' (e.g. 'cyx')")
    if not t.channel_names:
        out.append(f"{where}.channel_names is empty: name each channel (e.g. ('membrane',))")
    if kind == "inputs" and not any(a in SPATIAL for a in axes):
        out.append(f"{where}.axes={axes!r} has no spatial axis: an input image needs 'yx' or 'zyx'")
    if kind == "outputs" and spatial is not None:
        own = "".join(a for a in axes if a in SPATIAL)
        if own and own != spatial:
            out.append(
                f"{where}.axes={axes!r}: an image output must have the input's spatial axes {spatial!r}, "
                "or none at all (one value per image)"
            )
    for j, op in enumerate(t.processing):
        if not isinstance(op, dict) or "id" not in op:
            out.append(f"{where}.processing[{j}] must be a dict like {{'id': 'sigmoid', 'kwargs': {{}}}}")
    return out


def problems(info: PackagingInfo) -> list[str]:
    """Every missing or malformed field of ``info``, each with how to fix it."""
    out: list[str] = []
    name = info.name or ""
    if not 5 <= len(name) <= 128 or set(name) - NAME_CHARS:
        out.append(
            f"PackagingInfo.name={name!r}: needs 5-128 characters, only letters, digits, spaces and _+-() "
            "(e.g. 'EM membrane U-Net 2D')"
        )
    if not (info.description or "").strip():
        out.append("PackagingInfo.description is empty: say in one sentence what the model does")
    if not (info.task or "").strip():
        out.append("PackagingInfo.task is empty: e.g. 'semantic segmentation', 'counting', 'denoising'")
    if not info.license:
        out.append("PackagingInfo.license is missing: set an SPDX identifier such as 'MIT' or 'CC-BY-4.0'")
    elif not is_license(info.license):
        out.append(
            f"PackagingInfo.license={info.license!r} is not an SPDX license identifier: use e.g. "
            "'MIT', 'CC-BY-4.0', 'BSD-3-Clause' (see https://spdx.org/licenses/)"
        )
    if not info.authors:
        out.append("PackagingInfo.authors is empty: add at least one {'name': ..., 'affiliation': ...}")
    for i, a in enumerate(info.authors):
        if not isinstance(a, dict) or not str(a.get("name", "")).strip():
            out.append(f"PackagingInfo.authors[{i}] has no 'name': give {{'name': 'First Last', ...}}")
        elif "/" in a["name"] or "\\" in a["name"]:
            out.append(f"PackagingInfo.authors[{i}].name={a['name']!r} may not contain slashes")
    if not info.cite:
        out.append(
            "PackagingInfo.cite is empty: cite at least the method or data, {'text': ..., 'doi': ...} "
            "or {'text': ..., 'url': ...}"
        )
    for i, c in enumerate(info.cite):
        if not isinstance(c, dict) or not c.get("text"):
            out.append(f"PackagingInfo.cite[{i}] has no 'text'")
        elif not c.get("doi") and not is_url(c.get("url")):
            out.append(f"PackagingInfo.cite[{i}] ({c['text'][:40]!r}) needs a 'doi' or an http(s) 'url'")
    if not info.inputs:
        out.append("PackagingInfo.inputs is empty: describe the input tensor (TensorInfo('raw', 'cyx', ...))")
    elif len(info.inputs) > 1:
        out.append(f"PackagingInfo.inputs has {len(info.inputs)} tensors: emzoo packages one input only")
    if not info.outputs:
        out.append("PackagingInfo.outputs is empty: describe at least one output tensor")
    spatial = None
    for i, t in enumerate(info.inputs):
        out += _tensor_problems("inputs", i, t, None)
        spatial = "".join(a for a in t.axes if a in SPATIAL)
    for i, t in enumerate(info.outputs):
        out += _tensor_problems("outputs", i, t, spatial)
    ids = [t.id for t in (*info.inputs, *info.outputs)]
    if len(set(ids)) != len(ids):
        out.append(f"tensor ids must be unique across inputs and outputs, got {ids}")
    for a in (spatial or "") if info.pixel_size else "":  # empty: images of unknown/mixed pixel size
        size = info.pixel_size.get(a)
        if not isinstance(size, int | float) or size <= 0:
            out.append(
                f"PackagingInfo.pixel_size has no positive size for axis {a!r}: give the training data's "
                f"pixel size, e.g. {{'y': 4.0, 'x': 4.0}}"
            )
    if info.pixel_size and info.pixel_unit not in _space_units():
        out.append(
            f"PackagingInfo.pixel_unit={info.pixel_unit!r} is not a unit name bioimage.io knows: use "
            "'nanometer', 'angstrom' or 'micrometer'"
        )
    td = info.training_data or {}
    if not td.get("name"):
        out.append("PackagingInfo.training_data has no 'name': name the data set the model was trained on")
    if not str(td.get("source", "")).strip():
        out.append(
            "PackagingInfo.training_data has no 'source': say where the training data comes from "
            "(best an http(s) URL where it can be obtained)"
        )
    if not (info.intended_use or "").strip():
        out.append("PackagingInfo.intended_use is empty: say what images and questions the model is for")
    if not (info.limitations or "").strip():
        out.append(
            "PackagingInfo.limitations is empty: say where the model fails (other tissue, pixel size...)"
        )
    return out


def check_info(info: PackagingInfo) -> None:
    """Raise :class:`PackagingError` listing every problem of ``info`` (nothing is written)."""
    found = problems(info)
    if found:
        listed = "\n".join(f"  - {p}" for p in found)
        raise PackagingError(f"the packaging metadata is incomplete ({len(found)} problem(s)):\n{listed}")


def authors(info_authors: tuple[dict[str, str], ...]) -> list[Any]:
    """bioimageio ``Author`` objects; ``github_user`` is dropped (bioimageio.spec checks it online and
    fails offline with a raw ConnectError)."""
    from bioimageio.spec.model import v0_5

    out = []
    for a in info_authors:
        if a.get("github_user"):
            log.warning("author %s: github_user is left out (it is checked online)", a["name"])
        out.append(v0_5.Author(**{k: a[k] for k in AUTHOR_KEYS if a.get(k)}))
    return out


def cite_entries(info_cite: tuple[dict[str, str], ...]) -> list[Any]:
    from bioimageio.spec.model import v0_5

    return [v0_5.CiteEntry(**{k: c[k] for k in ("text", "doi", "url") if c.get(k)}) for c in info_cite]


def data_url(td: dict[str, str], cite: tuple[dict[str, str], ...] = ()) -> str | None:
    """An http(s) address of the training data: its source, a URL inside its texts, or a DOI."""
    for key in ("source", "url"):
        if is_url(td.get(key)):
            return str(td[key])
    for value in td.values():
        found = re.search(r"https?://[^\s)>'\"]+", str(value))
        if found:
            return found.group(0).rstrip(".,;")
    if td.get("doi"):
        return f"https://doi.org/{td['doi']}"
    for c in cite:
        if c.get("doi"):
            return f"https://doi.org/{c['doi']}"
    return None


def slug(text: str) -> str:
    """A bioimage.io resource id made of ``text``: lower case, digits, ``-``."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s or "dataset"
