"""The losses: Noise2Void's squared error on the blind-spot (masked) pixels, and Neighbor2Neighbor's
reconstruction plus regularisation on pairs of sub-images (:mod:`.pairs`)."""

from __future__ import annotations

import torch
from torch import nn


def masked_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``sum(mask * (out - noisy)^2) / sum(mask)``; the target holds the noisy piece (channel 0) and
    the mask of the pixels whose values the network did not see (channel 1)."""
    noisy, mask = target[:, :1], target[:, 1:2]
    return torch.sum(mask * (out - noisy) ** 2) / torch.clamp(mask.sum(), min=1.0)


class MaskedMSE(nn.Module):
    """The Noise2Void loss (:func:`masked_mse`)."""

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return masked_mse(out, target)


class NeighbourLoss(nn.Module):
    """Neighbor2Neighbor: ``mean((f(g1) - g2)^2) + gamma * mean((f(g1) - g2 - (g1(f(y)) - g2(f(y))))^2)``
    on the three channels :class:`~.pairs.TrainingNet` returns in training; on one channel (a
    validation piece's ``f(g1)`` against its target ``[g2, 1]``, :func:`~.pairs.pair_code`) the
    squared error of ``f(g1)`` against ``g2``."""

    def __init__(self, gamma: float):
        super().__init__()
        self.gamma = gamma

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if out.shape[1] == 1:
            return masked_mse(out, target)
        denoised, g2, gap = out[:, :1], out[:, 1:2], out[:, 2:3]
        residual = denoised - g2
        return torch.mean(residual**2) + self.gamma * torch.mean((residual - gap) ** 2)
