"""The detector's loss: CenterNet's penalty-reduced focal loss on the heat map plus an L1 loss on the
log-diameter at and near the centres."""

from __future__ import annotations

import torch
from torch import nn

EPS = 1e-6  # keeps the logarithms finite where the heat map saturates


class DetectionLoss(nn.Module):
    """``focal(heat) + size_weight * mean |log d - log d_true|`` over pixels whose target heat is at
    least ``size_region`` (the centre and its neighbours). ``output`` is the network's ``(heat,
    diameter)``; ``target`` the ``(b, 3, y, x)`` maps of :func:`data.render_targets`."""

    def __init__(
        self, size_weight: float = 0.5, size_region: float = 0.5, alpha: float = 2.0, beta: float = 4.0
    ):
        super().__init__()
        self.size_weight, self.size_region, self.alpha, self.beta = size_weight, size_region, alpha, beta

    def forward(self, output: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        heat, diameter = output
        t, d_true = target[:, 0:1], target[:, 1:2]
        # log(p + eps), not log(clamp(p)): a clamp has no gradient, so a heat map that once fell below
        # the clamp everywhere (a loss spike) could never recover; this one always gets a gradient
        p = heat
        pos = (t >= 1 - 1e-6).float()
        pos_loss = torch.log(p + EPS) * (1 - p) ** self.alpha * pos
        neg_loss = torch.log(1 - p + EPS) * p**self.alpha * (1 - t) ** self.beta * (1 - pos)
        focal = -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)
        region = ((t >= self.size_region) & (d_true > 0)).float()
        error = torch.abs(torch.log(diameter.clamp(min=1e-3)) - torch.log(d_true.clamp(min=1.0)))
        size = (error * region).sum() / region.sum().clamp(min=1.0)
        return focal + self.size_weight * size
