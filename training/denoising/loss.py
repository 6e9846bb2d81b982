"""The Noise2Void loss: squared error on the blind-spot (masked) pixels only."""

from __future__ import annotations

import torch
from torch import nn


class MaskedMSE(nn.Module):
    """``sum(mask * (out - noisy)^2) / sum(mask)``; the target holds the noisy piece (channel 0) and
    the mask of the pixels whose values the network did not see (channel 1)."""

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        noisy, mask = target[:, :1], target[:, 1:2]
        return torch.sum(mask * (out - noisy) ** 2) / torch.clamp(mask.sum(), min=1.0)
