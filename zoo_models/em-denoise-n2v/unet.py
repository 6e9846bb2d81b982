"""A small 2D/3D U-Net (self-contained: imports only torch; copied into packages as-is).

Scriptable with ``torch.jit.script`` and exportable to ONNX. Input sizes must be multiples of
``2 ** depth`` along every spatial axis; the receptive-field radius of the default depth-3 network
is about 46 px.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(dims: int, cin: int, cout: int) -> nn.Sequential:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
    return nn.Sequential(
        conv(cin, cout, 3, padding=1, bias=False),
        norm(cout),
        nn.ReLU(inplace=True),
        conv(cout, cout, 3, padding=1, bias=False),
        norm(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with ``depth`` poolings; ``features`` channels at full resolution, doubled per level.

    The output has ``out_channels`` raw scores (logits); activation belongs to the package's
    postprocessing (e.g. ``sigmoid``), so that tiles are stitched before any non-linearity.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 3,
        features: int = 16,
        dims: int = 2,
    ):
        super().__init__()
        pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        up = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        widths = [features * 2**i for i in range(depth + 1)]
        self.encoders = nn.ModuleList()
        cin = in_channels
        for w in widths[:-1]:
            self.encoders.append(_conv_block(dims, cin, w))
            cin = w
        self.pool = pool(2)
        self.bottom = _conv_block(dims, widths[-2], widths[-1])
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in range(depth, 0, -1):
            self.ups.append(up(widths[i], widths[i - 1], 2, stride=2))
            self.decoders.append(_conv_block(dims, 2 * widths[i - 1], widths[i - 1]))
        self.head = conv(widths[0], out_channels, 1)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        # iterate ModuleLists together and index the skip list (TorchScript cannot zip a list in)
        for i, (up, decoder) in enumerate(zip(self.ups, self.decoders)):  # noqa: B905
            x = up(x)
            x = decoder(torch.cat([x, skips[len(skips) - 1 - i]], dim=1))
        return self.head(x)
