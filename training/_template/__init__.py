"""TEMPLATE use case package (skipped by discovery because the folder name starts with ``_``)."""

from .usecase import MyUseCase

__all__ = ["MyUseCase"]
