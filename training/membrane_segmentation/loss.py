"""Binary cross-entropy plus soft Dice on membrane logits."""

from __future__ import annotations

import torch
from torch import nn


class BceDiceLoss(nn.Module):
    """``BCE(logits, target) + dice_weight * (1 - soft Dice(sigmoid(logits), target))``.

    BCE trains every pixel; the Dice term counters the imbalance of thin membranes (about 22% of the
    pixels) and rewards closed, continuous membranes.
    """

    def __init__(self, dice_weight: float = 1.0, smooth: float = 1.0):
        super().__init__()
        self.dice_weight = dice_weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bce = nn.functional.binary_cross_entropy_with_logits(logits, target)
        if self.dice_weight == 0:
            return bce
        p = torch.sigmoid(logits)
        overlap = (p * target).sum()
        dice = (2 * overlap + self.smooth) / (p.sum() + target.sum() + self.smooth)
        return bce + self.dice_weight * (1 - dice)
