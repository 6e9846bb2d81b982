"""Use case ``membrane_segmentation``: ISBI 2012 ssTEM membranes with a 2D U-Net (see README.md)."""

from .usecase import MembraneSegmentation

__all__ = ["MembraneSegmentation"]
