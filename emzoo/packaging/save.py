"""Write a package atomically: save to a hidden partial path beside the output
(:func:`emzoo.atomic.atomic_path`), read it back with bioimageio.spec, run bioimageio.core's
``test_model`` per weight format, and only then rename it into place. A failure at any point leaves
neither the partial file nor a package (and an existing package, replaced with ``overwrite``, as it
was)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from emzoo.atomic import atomic_path
from emzoo.checks.core import run_core_test
from emzoo.packaging.export import PackagingError


def save_and_check(descr, output: Path, formats: Sequence[str], *, test_with_bioimageio: bool = True) -> None:
    """Save to a hidden partial path next to ``output``, check it, then move it into place."""
    from bioimageio.spec import (
        InvalidDescr,
        load_description,
        save_bioimageio_package,
        save_bioimageio_package_as_folder,
    )

    as_zip = output.suffix.lower() == ".zip"
    with atomic_path(output) as partial:
        if as_zip:
            save_bioimageio_package(descr, output_path=partial)
        else:
            save_bioimageio_package_as_folder(descr, output_path=partial)
        source = partial if as_zip else partial / "rdf.yaml"
        loaded = load_description(source, perform_io_checks=True)
        if isinstance(loaded, InvalidDescr):
            from emzoo.package.validation import one_paragraph

            raise PackagingError(one_paragraph(str(output), loaded.validation_summary))
        if test_with_bioimageio:
            core_test(source, formats, output)
        remember_code(loaded)
        if output.is_dir():  # the package it replaces (a folder cannot be renamed over)
            shutil.rmtree(output)
        elif output.exists():
            output.unlink()


def remember_code(loaded) -> None:
    """Record the package's code (its architecture) as trusted: emzoo wrote it from the caller's own
    architecture, which the export has already run (:mod:`emzoo.package.trust`)."""
    from emzoo.package.describe import spec_from_description
    from emzoo.package.trust import remember

    remember(spec_from_description(loaded, str(loaded.format_version)))


def core_test(source: Path, formats: Sequence[str], output: Path) -> None:
    """bioimageio.core's ``test_model`` for each weight format; the first failure stops the build
    (the package's code is emzoo's own copy of the caller's architecture: trusted)."""
    for fmt in formats:
        passed, why = run_core_test(source, fmt, devices=["cpu"], code_trusted=True)
        if not passed:
            raise PackagingError(
                f"bioimageio.core's test_model fails the {fmt} weights of {output.name}: {why}; "
                "nothing was written"
            )
