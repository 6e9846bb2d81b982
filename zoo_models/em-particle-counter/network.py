"""The particle detector: local contrast normalisation, a U-Net and two heads (self-contained: imports
only torch; copied into packages as-is, scriptable and exportable to ONNX).

``ParticleDetector(x)`` takes the package's normalised image ``(b, 1, y, x)`` (sizes multiples of
``2 ** depth``) and returns two maps of the same size: ``heat`` (0..1, peaks of 1 at particle centres,
a sigmoid inside the network) and ``diameter`` (px, an exponential inside the network).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class LocalContrast(nn.Module):
    """``(x - local mean) / local std``: the statistics of ``cell`` px cells, averaged over 5 x 5
    cells and interpolated back (a smooth window of about ``5 * cell`` px), so that faint particles on
    a bright, textured support stand out as much as on a dark one."""

    def __init__(self, cell: int = 16, eps: float = 0.05):
        super().__init__()
        self.cell = cell
        self.eps = eps

    def _smooth(self, x: torch.Tensor) -> torch.Tensor:
        m = F.avg_pool2d(x, self.cell, self.cell, ceil_mode=True)
        m = F.avg_pool2d(m, 5, 1, 2, count_include_pad=False)
        # the size comes from the tensor's shape, unconverted, so that ONNX keeps it dynamic
        return F.interpolate(m, size=x.shape[2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self._smooth(x)
        var = torch.clamp(self._smooth(x * x) - mean * mean, min=0.0)
        return (x - mean) / torch.sqrt(var + self.eps * self.eps)


class UNet(nn.Module):
    """U-Net with ``depth`` poolings; ``features`` channels at full resolution, doubled per level up
    to ``max_features``."""

    def __init__(self, in_channels: int, out_channels: int, depth: int, features: int, max_features: int):
        super().__init__()
        widths = [min(features * 2**i, max_features) for i in range(depth + 1)]
        self.encoders = nn.ModuleList()
        cin = in_channels
        for w in widths[:-1]:
            self.encoders.append(_block(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.bottom = _block(widths[-2], widths[-1])
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in range(depth, 0, -1):
            self.ups.append(nn.ConvTranspose2d(widths[i], widths[i - 1], 2, stride=2))
            self.decoders.append(_block(2 * widths[i - 1], widths[i - 1]))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for i, (up, decoder) in enumerate(zip(self.ups, self.decoders)):  # noqa: B905 (TorchScript)
            x = decoder(torch.cat([up(x), skips[len(skips) - 1 - i]], dim=1))
        return self.head(x)


class ParticleDetector(nn.Module):
    """Centre heat map and diameter map of particles (CenterNet-style, fully convolutional)."""

    def __init__(
        self,
        depth: int = 5,
        features: int = 16,
        max_features: int = 128,
        local_contrast: bool = True,
        local_cell: int = 16,
        prior_diameter: float = 20.0,
    ):
        super().__init__()
        self.local_contrast = local_contrast
        self.contrast = LocalContrast(local_cell)
        self.unet = UNet(2 if local_contrast else 1, 2, depth, features, max_features)
        self.log_prior = float(math.log(prior_diameter))
        with torch.no_grad():  # start with a heat map of about 0.1 everywhere (CenterNet)
            self.unet.head.bias[0] = -2.19
            self.unet.head.bias[1] = 0.0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.local_contrast:
            x = torch.cat([x, self.contrast(x)], dim=1)
        out = self.unet(x)
        heat = torch.sigmoid(out[:, 0:1])
        diameter = torch.exp(torch.clamp(out[:, 1:2], -6.0, 6.0) + self.log_prior)
        return heat, diameter
