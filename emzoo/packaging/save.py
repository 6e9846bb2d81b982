"""Write a package atomically: save to a hidden partial path beside the output, read it back with
bioimageio.spec, run bioimageio.core's ``test_model`` per weight format, and only then rename it into
place. A failure at any point leaves neither the partial file nor a package."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

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
    partial = output.with_name(f".{output.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        if as_zip:
            save_bioimageio_package(descr, output_path=partial)
        else:
            save_bioimageio_package_as_folder(descr, output_path=partial)
        source = partial if as_zip else partial / "rdf.yaml"
        loaded = load_description(source, perform_io_checks=True)
        if isinstance(loaded, InvalidDescr):
            from emzoo.runtime.validation import one_paragraph

            raise PackagingError(one_paragraph(str(output), loaded.validation_summary))
        if test_with_bioimageio:
            core_test(source, formats, output)
        if output.is_dir():
            shutil.rmtree(output)
        elif output.exists():
            output.unlink()
        os.replace(partial, output)
    finally:
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        elif partial.exists():
            partial.unlink()


def core_test(source: Path, formats: Sequence[str], output: Path) -> None:
    """bioimageio.core's ``test_model`` for each weight format; the first failure stops the build."""
    from bioimageio.core import test_model

    from emzoo.runtime.validation import _quiet_bioimageio, format_loc

    _quiet_bioimageio()
    for fmt in formats:
        summary = test_model(source, weight_format=fmt, devices=["cpu"])
        if summary.status != "passed":
            failed = [d for d in summary.details if d.status == "failed"][:3]
            why = "; ".join(
                f"{d.name} ({format_loc(e.loc)}): {' '.join(str(e.msg).split())[:240]}"
                for d in failed
                for e in d.errors[:1]
            )
            raise PackagingError(
                f"bioimageio.core's test_model fails the {fmt} weights of {output.name}: "
                f"{why or summary.status}; nothing was written"
            )
