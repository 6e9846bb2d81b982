"""The EM image-type classifier (self-contained: imports only torch; copied into packages as-is,
scriptable and exportable to ONNX).

``ModalityClassifier(grid=0)`` (training) takes patches ``(b, 1, p, p)`` and returns raw class logits
``(b, classes)``. ``ModalityClassifier(grid=G)`` (the package) takes a whole image ``(b, 1, y, x)`` of
any size, cuts a fixed ``G x G`` grid of ``patch`` px patches spread evenly over it (the first at the
top-left corner, the last at the bottom-right; images smaller than a patch are extended by repeating
their edge pixels), and returns the mean of the patches' logits. Each patch is normalised on its own
(zero mean, unit variance), so the image's grey levels, dtype and exposure do not matter, only its
texture.

The patches' last feature maps are laid out as a mosaic in their grid positions (one leaf module,
:class:`Mosaic`) before the global average pooling: the mean over the mosaic is the mean of the
patches' pooled features, and the linear head makes that the mean of their logits; Grad-CAM finds the
mosaic as the network's last spatial feature map, so its map shows which grid cells drove a class.

>>> net = ModalityClassifier(classes=4, features=4, depth=2, patch=32, grid=2).eval()
>>> tuple(net(torch.rand(1, 1, 50, 70)).shape)
(1, 4)
"""

from __future__ import annotations

import torch
from torch import nn


class GridPatches(nn.Module):
    """``(b, c, y, x)`` -> ``(b * grid**2, c, patch, patch)``: the fixed grid of patches, row by row."""

    def __init__(self, patch: int, grid: int):
        super().__init__()
        self.patch = patch
        self.grid = grid

    def _index(self, length: torch.Tensor, device: torch.device) -> torch.Tensor:
        # the sizes stay tensors (not Python ints), so that traced exports keep them dynamic
        span = torch.clamp(length - self.patch, min=0)
        i = torch.arange(self.grid, device=device)
        starts = torch.div((2 * i + 1) * span, 2 * self.grid, rounding_mode="floor")
        index = starts[:, None] + torch.arange(self.patch, device=device)[None, :]
        return torch.minimum(index, length - 1).reshape(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = torch._shape_as_tensor(x).to(x.device)
        c, g, p = x.shape[1], self.grid, self.patch
        x = x.index_select(2, self._index(shape[2], x.device))
        x = x.index_select(3, self._index(shape[3], x.device))
        x = x.reshape(-1, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(-1, c, p, p)


class PatchNorm(nn.Module):
    """Each patch to zero mean and unit variance (a constant patch becomes 0)."""

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = torch.sqrt(((x - mean) ** 2).mean(dim=(1, 2, 3), keepdim=True))
        return (x - mean) / torch.clamp(std, min=self.eps)


class Mosaic(nn.Module):
    """``(b * grid**2, f, h, w)`` -> ``(b, f, grid * h, grid * w)``: the patches' maps in their grid
    cells (unchanged for ``grid`` 0 or 1)."""

    def __init__(self, grid: int):
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grid <= 1:
            return x
        g, f, h, w = self.grid, x.shape[1], x.shape[2], x.shape[3]
        x = x.reshape(-1, g, g, f, h, w).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(-1, f, g * h, g * w)


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ModalityClassifier(nn.Module):
    """Patch CNN: a stride-2 3x3 convolution (``features`` channels), then ``depth`` 3x3 convolutions
    (channels doubled each time up to ``max_features``), each but the last followed by 2x2 max pooling
    (batch norm and ReLU after every convolution); global average pooling; dropout; one linear layer
    to ``classes`` raw logits."""

    def __init__(
        self,
        classes: int = 4,
        features: int = 16,
        depth: int = 4,
        max_features: int = 64,
        patch: int = 128,
        grid: int = 0,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.grid = grid
        self.patches = GridPatches(patch, max(grid, 1))
        self.norm = PatchNorm()
        layers: list[nn.Module] = [_block(1, features, stride=2)]
        cin = features
        for level in range(1, depth + 1):
            cout = min(features * 2**level, max_features)
            layers.append(_block(cin, cout))
            if level < depth:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.mosaic = Mosaic(grid)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grid > 0:
            x = self.patches(x)
        x = self.mosaic(self.features(self.norm(x)))
        return self.head(self.drop(torch.flatten(self.pool(x), 1)))
