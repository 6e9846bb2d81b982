"""Use case ``particle_counting``: nanoparticles in STEM images with a density-map U-Net (see README.md)."""

from .usecase import ParticleCounting

__all__ = ["ParticleCounting"]
