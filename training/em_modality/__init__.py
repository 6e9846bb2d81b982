"""Use case ``em_modality``: an EM image's type from patches, the PSI for unknown types (README.md)."""

from .usecase import EMModality

__all__ = ["EMModality"]
