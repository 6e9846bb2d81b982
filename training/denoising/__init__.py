"""Use case ``denoising``: Noise2Void on noisy TEM and cryo-EM, evaluated on SEM (see README.md)."""

from .usecase import Denoising

__all__ = ["Denoising"]
