"""The network as it trains: the U-Net of :mod:`.network` on normalised pieces, and for
Neighbor2Neighbor (Huang et al., CVPR 2021) the random neighbour sub-sampler and the pair it trains on.

In training mode with ``method="ne2ne"``, :class:`TrainingNet` takes a batch of noisy pieces ``y``,
draws in every 2x2 cell two adjacent pixels (one of the 8 ordered pairs of horizontal or vertical
neighbours), which make two half-size images ``g1(y)`` and ``g2(y)``, and returns
``[f(g1(y)), g2(y), g1(f(y)) - g2(f(y))]`` stacked as channels, ``f(y)`` computed without gradient:
what :class:`~.loss.NeighbourLoss` needs. A validation piece with its fixed pair (:func:`pair_code`)
gives ``f(g1(y))``; otherwise (evaluation, Noise2Void) it is the U-Net itself.
The state dict is :class:`~.network.GreyLevelUNet`'s, so packages load into it (``--init``) and it
into them.
"""

from __future__ import annotations

import torch

from .network import GreyLevelUNet

# the (first, second) pixel of each ordered pair of neighbours in a 2x2 cell, pixels numbered
# 0 1 / 2 3 (top-left, top-right, bottom-left, bottom-right); diagonal pairs are not neighbours
PAIRS = ((0, 1), (1, 0), (0, 2), (2, 0), (1, 3), (3, 1), (2, 3), (3, 2))


def cells(x: torch.Tensor) -> torch.Tensor:
    """``(b, c, h, w)`` -> ``(b, c, h/2, w/2, 4)``: the four pixels of every 2x2 cell."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h // 2, w // 2, 4)


def draw_pairs(
    x: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every 2x2 cell of every image of ``x`` a random ordered pair of neighbours: the index
    (0..3) of the first and of the second pixel, each ``(b, 1, h/2, w/2, 1)``."""
    b, _, h, w = x.shape
    table = torch.tensor(PAIRS, device=x.device)
    pick = torch.randint(len(PAIRS), (b, 1, h // 2, w // 2), generator=generator, device=x.device)
    return table[pick, 0][..., None], table[pick, 1][..., None]


def sub_image(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The half-size image of the pixels ``index`` picks in every 2x2 cell (all channels alike)."""
    grid = cells(x)
    return torch.gather(grid, 4, index.expand(*grid.shape[:4], 1))[..., 0]


def pair_code(piece: torch.Tensor, seed: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed Neighbor2Neighbor validation item of a ``(h, w)`` piece: the input ``[piece, code]``
    (``code`` 1 at the first pixel of every cell's pair, 2 at the second) and the target
    ``[g2, 1]`` at half size: the squared error of ``f(g1)`` against ``g2``, whose noise ``f`` never
    saw, is a held-out loss (the noise variance plus the error against the clean neighbour)."""
    generator = torch.Generator().manual_seed(int.from_bytes(bytes(s % 256 for s in seed), "little"))
    x = piece[None, None]
    first, second = draw_pairs(x, generator)
    h, w = piece.shape
    code = torch.zeros(1, 1, h // 2, w // 2, 4)
    code.scatter_(4, first, 1.0)
    code.scatter_(4, second, 2.0)
    code = code.reshape(1, 1, h // 2, w // 2, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(h, w)
    g2 = sub_image(x, second)[0, 0]
    return torch.stack([piece, code]), torch.stack([g2, torch.ones_like(g2)])


class TrainingNet(GreyLevelUNet):
    """:class:`~.network.GreyLevelUNet`'s U-Net without the normalisation (training pieces come
    normalised); with ``method="ne2ne"`` and in training mode it returns the Neighbor2Neighbor pair."""

    def __init__(self, *args, method: str = "n2v", **kwargs):
        super().__init__(*args, **kwargs)
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 2:  # a validation piece with its fixed pair (:func:`pair_code`): f(g1)
            first = torch.argmax((cells(x[:, 1:]) == 1).to(x.dtype), dim=4, keepdim=True)
            return self.unet(sub_image(x[:, :1], first))
        if not (self.training and self.method == "ne2ne"):
            return self.unet(x)
        with torch.no_grad():
            full = self.unet(x)
        first, second = draw_pairs(x)
        g2 = sub_image(x, second)
        gap = sub_image(full, first) - sub_image(full, second)
        return torch.cat([self.unet(sub_image(x, first)), g2, gap], dim=1)
