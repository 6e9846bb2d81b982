"""Whose Python code emzoo runs: a package's own code only when it is trusted.

``pytorch_state_dict`` weights come with the network's code (a Python file in the package, or a
callable of an installed module, called with the package's arguments), which importing and building
the network runs. emzoo runs it only when:

* the user says so (``trust_package_code=True``, ``--trust-package-code``, or the environment
  variable ``EMZOO_TRUST_PACKAGE_CODE=1`` for CI), or
* the package lies in this repository's own zoo (``zoo_models/``), or
* emzoo built a package with exactly this code: :func:`remember` records, in the cache folder, the
  fingerprint of the code of every package that ``emzoo.packaging`` writes.

A fingerprint is the sha256 of the code's bytes as read from the package (never a hash the package
declares), together with the callable and its arguments, so a package cannot borrow the trust of
another package's file to call something else in it. Nothing the package says about itself (such as
``config.emzoo``) counts as proof.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from emzoo.atomic import write_text_atomic
from emzoo.cache import cache_dir, sha256_bytes, sha256_file
from emzoo.package.spec import Architecture, ModelSpec, Weights

TRUST_ENV = "EMZOO_TRUST_PACKAGE_CODE"
ZOO = Path(__file__).resolve().parents[2] / "zoo_models"  # this repository's own packages
_STORE = "trusted_code.txt"


def env_trusts() -> bool:
    """``EMZOO_TRUST_PACKAGE_CODE`` is set to 1 (or true/yes)."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


def fingerprint(arch: Architecture, code_sha256: str | None) -> str:
    """The sha256 of what would run: the code's bytes (their sha256), the callable, its arguments."""
    record = {
        "code": code_sha256,
        "import_from": arch.import_from,
        "callable": arch.callable,
        "kwargs": arch.kwargs,
    }
    return sha256_bytes(json.dumps(record, sort_keys=True, default=str).encode())


def _store() -> Path:
    return cache_dir("trust") / _STORE


def trusted_fingerprints() -> set[str]:
    try:
        lines = _store().read_text(encoding="utf-8").splitlines()
    except OSError:
        return set()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def remember(spec: ModelSpec) -> None:
    """Record the code of the (emzoo-built) package ``spec`` as trusted; uses the code's declared
    sha256, which the caller has checked against the file (bioimageio.spec's io checks)."""
    new = {
        fingerprint(w.architecture, w.architecture.sha256)
        for w in spec.weights.values()
        if w.architecture is not None and (w.architecture.sha256 or not w.architecture.source)
    }
    known = trusted_fingerprints()
    if new <= known:
        return
    lines = ["# code of the packages emzoo built (emzoo.package.trust); delete a line to distrust it"]
    write_text_atomic(_store(), "\n".join([*lines, *sorted(known | new)]) + "\n")


def in_own_zoo(root: Path) -> bool:
    """The package folder lies in this repository's ``zoo_models/``."""
    return ZOO.is_dir() and root.resolve().is_relative_to(ZOO)


def code_of(weights: Weights) -> str | None:
    """What code the weights need, in words (None: they need none)."""
    arch = weights.architecture
    if arch is None:
        return None
    if arch.source:
        return f"the architecture file {arch.source}"
    return f"the architecture {arch.import_from}.{arch.callable} (with the package's arguments)"


def is_trusted(root: Path, weights: Weights, *, trusted: bool = False) -> bool:
    """May emzoo run the code that ``weights`` (of the package in ``root``) need?"""
    arch = weights.architecture
    if arch is None or trusted or env_trusts() or in_own_zoo(root):
        return True
    code = None
    if arch.source:
        path = (root / arch.source).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            return False
        code = sha256_file(path)
    return fingerprint(arch, code) in trusted_fingerprints()


def refusal(source: str, weights: Weights, others: list[str]) -> str:
    """The one line that says why the code was not run and how to allow it (``others``: the
    package's weight formats that need no code)."""
    instead = f"; or run its {others[0]} weights with {{weight_format={others[0]}}}" if others else ""
    return (
        f"{source}: its {weights.format} weights need {code_of(weights)}, Python code from the package "
        "that emzoo runs only for packages you trust: if you trust this one, pass "
        f"{{trust_package_code}} (or set {TRUST_ENV}=1){instead}"
    )
