"""Open any bioimage.io model package: a ``.zip``, a folder, or an ``rdf.yaml``/``bioimageio.yaml``.

``open_model`` unpacks zips safely into the cache, validates the description with bioimageio.spec
(converting spec 0.4 to 0.5 once), and keeps the resulting :class:`ModelSpec` as JSON keyed by the
description's hash, so later runs skip bioimageio.spec entirely. Weight files are checked against
their sha256 when a backend loads them (:meth:`ModelPackage.verified_file`).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

from emzoo.atomic import write_text_atomic
from emzoo.cache import cache_dir, sha256_bytes, sha256_file
from emzoo.errors import PackageError
from emzoo.package.safe_yaml import safe_load
from emzoo.package.safe_zip import extract_zip_safely
from emzoo.package.spec import ModelSpec
from emzoo.version import __version__

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
_SPEC_CACHE_VERSION = "2"  # 2: 0.4 descriptions read as 0.4


@dataclass(frozen=True)
class ModelPackage:
    """An opened package: its description, the folder that holds its files, and whether the user
    trusts its Python code (see :mod:`emzoo.package.trust`)."""

    spec: ModelSpec
    root: Path
    rdf: Path
    source: str
    trust_code: bool = False

    def trusting(self, trust_code: bool = True) -> ModelPackage:
        """This package, with its code trusted when ``trust_code`` (trust is never taken away)."""
        return replace(self, trust_code=True) if trust_code and not self.trust_code else self

    def file(self, relative: str) -> Path:
        """The package file ``relative``; it must stay inside the package folder."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise PackageError(f"{self.source}: file {relative!r} points outside the package")
        if not path.is_file():
            raise PackageError(f"{self.source}: the package lacks its file {relative!r}")
        return path

    def verified_file(self, relative: str, sha256: str | None) -> Path:
        """The file, after checking its sha256 against the declared one (when declared)."""
        path = self.file(relative)
        if sha256:
            actual = sha256_file(path)
            if actual != sha256:
                raise PackageError(
                    f"{self.source}: hash mismatch for {relative}: the package declares sha256 "
                    f"{sha256[:12]}..., the file has {actual[:12]}...; the file is damaged or was "
                    "changed after packaging: get the package again"
                )
        return path


def find_rdf(folder: Path) -> Path | None:
    for name in RDF_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.bioimageio.yaml"))
    if found:
        return found[0]
    subfolders = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))]
    if len(subfolders) == 1 and not any(p.is_file() for p in folder.iterdir()):
        return find_rdf(subfolders[0])
    return None


def _unpacked(zip_path: Path) -> Path:
    """The cache folder holding the zip's files, unpacked once per zip content."""
    target = cache_dir("packages") / sha256_file(zip_path)[:32]
    if not target.is_dir():
        extract_zip_safely(zip_path, target)
    return target


def locate(source: str | Path) -> tuple[Path, Path]:
    """``(root folder, description file)`` for a zip, folder, or YAML source."""
    path = Path(source).expanduser()
    if not path.exists():
        raise PackageError(f"{source}: no such model package (give a .zip, a folder, or an rdf.yaml)")
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        return path.parent, path
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise PackageError(f"{source}: not a model package (expected a .zip, a folder or rdf.yaml)")
        path = _unpacked(path)
    rdf = find_rdf(path)
    if rdf is None:
        raise PackageError(f"{source}: no rdf.yaml or bioimageio.yaml found in the package")
    return rdf.parent, rdf


def original_format_version(rdf: Path) -> str:
    """The description's ``format_version``; its YAML is read with aliases bounded (safe_yaml)."""
    try:
        content = safe_load(rdf.read_text(encoding="utf-8"), str(rdf))
    except UnicodeDecodeError as e:
        raise PackageError(f"{rdf}: not valid YAML ({e})") from e
    if not isinstance(content, dict):
        raise PackageError(f"{rdf}: the description is not a YAML mapping")
    return str(content.get("format_version", "?"))


def _spec_cache_path(rdf: Path) -> Path:
    key = sha256_bytes(rdf.read_bytes() + f"|{__version__}|{_SPEC_CACHE_VERSION}".encode())
    return cache_dir("descriptions") / f"{key[:40]}.json"


def describe(rdf: Path, source: str) -> ModelSpec:
    """Validate ``rdf`` with bioimageio.spec and translate it (the slow path, once per description)."""
    version = original_format_version(rdf)  # checks the YAML before bioimageio.spec is even imported
    from emzoo.package.describe import spec_from_description
    from emzoo.package.validation import load_validated

    descr = load_validated(rdf, source)
    return spec_from_description(descr, version)


def open_model(
    source: str | Path, *, use_cache: bool = True, trust_package_code: bool = False
) -> ModelPackage:
    """Open a model package from a zip, a folder, or a description file.

    ``trust_package_code`` lets backends run the package's own Python code (the architecture of
    ``pytorch_state_dict`` weights); without it only trusted code runs (:mod:`emzoo.package.trust`).

    Examples
    --------
    >>> pkg = open_model("zoo_models/em-membrane-unet2d")  # doctest: +SKIP
    >>> pkg.spec.inputs[0].describe_axes()  # doctest: +SKIP
    'batch, channel(1), y[96+8n], x[96+8n]'
    """
    root, rdf = locate(source)
    cached = _spec_cache_path(rdf) if use_cache else None
    if cached is not None and cached.is_file():
        try:
            spec = ModelSpec.from_dict(json.loads(cached.read_text()))
            return ModelPackage(spec, root, rdf, str(source), trust_package_code)
        except (ValueError, TypeError, KeyError):
            cached.unlink(missing_ok=True)  # written by another emzoo version: rebuild it
    spec = describe(rdf, str(source))
    if cached is not None:
        write_text_atomic(cached, json.dumps(spec.to_dict()))
    return ModelPackage(spec, root, rdf, str(source), trust_package_code)
