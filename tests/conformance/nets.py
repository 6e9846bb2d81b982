"""The tiny networks of the generated conformance packages (self-contained: copied into the
``pytorch_state_dict`` packages as their architecture source).

``Net`` concatenates its inputs along the channel axis, runs ``layers`` convolutions of ``kernel``
px (receptive-field radius ``layers * (kernel // 2)``) and gives one output per head, each a 1x1
convolution followed by its geometry: ``same``, ``up`` (2x nearest up-sampling), ``down`` (2x
average pooling), ``crop<k>`` (``k`` px cut from every side) or ``unsqueeze`` (a new singleton
axis after the channel axis, e.g. ``z`` for a 2D network).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Net(nn.Module):
    def __init__(
        self, dims: int, in_channels: int, heads: list, kernel: int = 3, layers: int = 1, width: int = 4
    ):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        blocks = []
        channels = in_channels
        for _ in range(layers):
            blocks += [conv(channels, width, kernel, padding=kernel // 2), nn.Tanh()]
            channels = width
        self.body = nn.Sequential(*blocks)
        self.heads = nn.ModuleList(conv(channels, int(h["channels"]), 1) for h in heads)
        self.kinds = [str(h.get("geometry", "same")) for h in heads]
        self.dims = dims

    def forward(self, *inputs: torch.Tensor):
        x = self.body(torch.cat(inputs, dim=1))
        outs = []
        for head, kind in zip(self.heads, self.kinds, strict=True):
            y = head(x)
            if kind == "up":
                y = F.interpolate(y, scale_factor=2.0, mode="nearest")
            elif kind == "down":
                y = F.avg_pool2d(y, 2) if self.dims == 2 else F.avg_pool3d(y, 2)
            elif kind.startswith("crop"):
                k = int(kind[4:])
                y = y[:, :, k:-k, k:-k] if self.dims == 2 else y[:, :, k:-k, k:-k, k:-k]
            elif kind == "unsqueeze":
                y = y.unsqueeze(2)
            outs.append(y)
        return tuple(outs) if len(outs) > 1 else outs[0]
