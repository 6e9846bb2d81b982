"""Pixel-wise squared error between the predicted and the true (scaled) density map, plus a term on
the counts in small cells, which keeps the map's background at zero (the count is its integral)."""

from __future__ import annotations

import torch
from torch import nn


class DensityLoss(nn.Module):
    """``mean((out - scale * target)^2) + count_weight * mean((cell count - true cell count)^2)``.

    The network predicts ``scale`` times the density (a blob of a small particle then peaks at a few
    units instead of a few hundredths, which suits the initialisation and Adam's step sizes); the
    package's postprocessing divides by ``scale``.

    The pixel error alone barely notices a small constant offset of the map (1.6e-4 particles per
    pixel costs almost nothing per pixel), but summed over a 2048 px image that offset adds hundreds
    of particles. The second term compares the number of particles in every ``cell`` x ``cell``
    square (the map summed over it), where such an offset is as large as a particle.
    """

    def __init__(self, scale: float = 100.0, count_weight: float = 0.0, cell: int = 32):
        super().__init__()
        self.scale = scale
        self.count_weight = count_weight
        self.cell = cell

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = torch.mean((out - self.scale * target) ** 2)
        if self.count_weight > 0:
            cell = min(self.cell, *out.shape[2:])
            area = cell**2
            predicted = nn.functional.avg_pool2d(out, cell) * (area / self.scale)
            true = nn.functional.avg_pool2d(target, cell) * area
            loss = loss + self.count_weight * torch.mean((predicted - true) ** 2)
        return loss
