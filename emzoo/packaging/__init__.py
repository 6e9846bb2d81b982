"""Turn trained PyTorch models into self-validating bioimage.io packages.

``package_module`` packages a module plus its :class:`~emzoo.packaging.info.PackagingInfo` (with
the :class:`~emzoo.packaging.info.TensorInfo` of each tensor); ``write_junit`` turns test results into
JUnit XML. Training run folders are packaged by the training framework's ``package_run`` (``emzoo
package``), which builds on this package; this package never imports the training framework. Torch is
imported only when a package is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emzoo.checks.junit import write_junit
    from emzoo.packaging.build import BuildOptions, package_module
    from emzoo.packaging.export import (
        Architecture,
        ExportMismatchError,
        PackagingError,
        Tolerance,
        export_weights,
    )
    from emzoo.packaging.info import PackagingInfo, TensorInfo
    from emzoo.packaging.tensors import intensity_stats

_LAZY = {
    "package_module": "emzoo.packaging.build",
    "BuildOptions": "emzoo.packaging.build",
    "intensity_stats": "emzoo.packaging.tensors",
    "Architecture": "emzoo.packaging.export",
    "ExportMismatchError": "emzoo.packaging.export",
    "PackagingError": "emzoo.packaging.export",
    "Tolerance": "emzoo.packaging.export",
    "export_weights": "emzoo.packaging.export",
    "write_junit": "emzoo.checks.junit",
    "PackagingInfo": "emzoo.packaging.info",
    "TensorInfo": "emzoo.packaging.info",
}

__all__ = [
    "Architecture",
    "BuildOptions",
    "ExportMismatchError",
    "PackagingError",
    "PackagingInfo",
    "TensorInfo",
    "Tolerance",
    "export_weights",
    "intensity_stats",
    "package_module",
    "write_junit",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emzoo.packaging' has no attribute {name!r}")
