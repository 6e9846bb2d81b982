"""Small networks for the packaging tests (self-contained: this file is the architecture source
copied into the image-to-value test package, so it imports only torch)."""

from __future__ import annotations

import torch
from torch import nn


class Counter(nn.Module):
    """Image-to-value: conv layers + global average pooling -> ``n_outputs`` scores per image."""

    def __init__(self, in_channels: int = 1, n_outputs: int = 3, features: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, features, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(features, features, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class DivergesInOnnx(nn.Module):
    """Adds 1 to its output while being exported to ONNX: an export that does not match PyTorch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if torch.onnx.is_in_onnx_export():
            y = y + 1.0
        return y


class ShapeDependent(nn.Module):
    """Branches on the input size: a trace bakes in one branch and fails on other sizes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if x.shape[-1] > 60:
            y = y * 2.0
        return y


class Histograms(nn.Module):
    """Image-to-value with an index axis: ``(batch, 2 channels, bins)``."""

    def __init__(self, bins: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(1, 2 * bins, 3, padding=1)
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mean(dim=(2, 3))
        return y.reshape(y.shape[0], 2, self.bins)
