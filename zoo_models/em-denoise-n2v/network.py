"""The packaged denoiser: emzoo's 2D U-Net with the input's normalisation inside it, so that it takes
and returns grey levels (self-contained: imports only torch; copied into packages as-is, scriptable
and exportable to ONNX).

``GreyLevelUNet(x)`` computes the mean and standard deviation of each image of the batch (all of
its pixels, as the package's ``zero_mean_unit_variance`` did), runs the U-Net on
``(x - mean) / (std + eps)`` and returns ``unet(...) * (std + eps) + mean``: the exact inverse, which
no spec-0.5 post-processing op can express with per-image statistics. Its layers, their names and so
its state dict are those of :class:`emzoo.architectures.unet.UNet` (2D), so the same weights load
into either: the U-Net trains on normalised pieces, the package holds this network. With
``upsample="resize"`` the decoder doubles the size by bilinear resizing and a 3x3 convolution instead
of a transposed convolution (no checkerboard grid; another state dict).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _up(cin: int, cout: int, how: str) -> nn.Module:
    if how == "transpose":
        return nn.ConvTranspose2d(cin, cout, 2, stride=2)
    return nn.Sequential(
        nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False),
        nn.Conv2d(cin, cout, 3, padding=1),
    )


class GreyLevelUNet(nn.Module):
    """``UNet(depth, features)`` (2D, the same layers) between a per-image normalisation and its
    inverse; ``in_channels``, ``out_channels`` and ``dims`` are those of the U-Net (``dims`` must
    be 2: the keyword is kept so that the U-Net's architecture keywords build it); ``upsample``:
    ``"transpose"`` (the U-Net's layers) or ``"resize"``."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 3,
        features: int = 16,
        dims: int = 2,
        eps: float = 1e-6,
        upsample: str = "transpose",
    ):
        super().__init__()
        if dims != 2:
            raise ValueError(f"GreyLevelUNet is 2D; dims={dims}")
        if upsample not in ("transpose", "resize"):
            raise ValueError(f"upsample must be 'transpose' or 'resize', not {upsample!r}")
        widths = [features * 2**i for i in range(depth + 1)]
        self.encoders = nn.ModuleList()
        cin = in_channels
        for w in widths[:-1]:
            self.encoders.append(_conv_block(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.bottom = _conv_block(widths[-2], widths[-1])
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in range(depth, 0, -1):
            self.ups.append(_up(widths[i], widths[i - 1], upsample))
            self.decoders.append(_conv_block(2 * widths[i - 1], widths[i - 1]))
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        self.depth = depth
        self.eps = eps

    def unet(self, x: torch.Tensor) -> torch.Tensor:
        """The U-Net alone (``UNet.forward``), on a normalised batch."""
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the statistics are constants to the gradient (detach: nothing changes in inference), so that
        # emzoo's receptive-field probe measures the U-Net's reach, which sets the tiles' halo
        mean = torch.mean(x, dim=(1, 2, 3), keepdim=True).detach()
        std = torch.sqrt(torch.mean((x - mean) ** 2, dim=(1, 2, 3), keepdim=True)).detach() + self.eps
        return self.unet((x - mean) / std) * std + mean
