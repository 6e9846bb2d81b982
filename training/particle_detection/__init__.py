"""Use case ``particle_detection``: nanoparticles in STEM images, detected and sized with a centre heat
map and a diameter map (see README.md)."""

from .usecase import ParticleDetection

__all__ = ["ParticleDetection"]
