"""What input sizes a network accepts and how far it looks: measured on the network itself.

* the *step* (down-sampling factor): the smallest power of two ``s`` such that a size that is a
  multiple of ``s`` (and of nothing larger) runs and keeps the output the input's size; 2**depth
  for a U-Net;
* the *receptive-field radius*: the farthest input pixel that the centre output pixel depends on,
  from the support of the input gradient (a perturbation probe such as
  :func:`emzoo.runtime.receptive_field.probe_radius` under-reports untrained networks, whose
  responses fade below any threshold: 17 px instead of 51 for a freshly initialised depth-3 U-Net);
* from both: the halo (the radius rounded up to the step) and the smallest input size,
  ``2 * halo + step``, which bioimage.io requires to exceed twice the halo.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from emzoo.package.spec import SizeRule
from emzoo.packaging.export import PackagingError, forward, import_torch

log = logging.getLogger(__name__)

MAX_STEP = 64
PROBE_SIZES = {1: (256, 1024, 4096), 2: (64, 128, 256, 512), 3: (32, 64, 128)}


@dataclass(frozen=True)
class Geometry:
    """Input size rule and halo of a single-input network (sizes per spatial axis, in pixels)."""

    step: int
    min_size: int
    halo: int  # 0 for networks without spatial outputs
    receptive_field: int | None  # measured radius; None when there are no spatial outputs

    @property
    def size_rule(self) -> SizeRule:
        """The accepted sizes, ``min_size + k * step`` (what the package's input axes declare)."""
        return SizeRule(min=self.min_size, step=self.step)

    def valid(self, n: int) -> int:
        """The largest accepted size <= n (at least ``min_size``)."""
        return self.size_rule.valid_below(n)

    def accepts(self, n: int) -> bool:
        return self.size_rule.accepts(n)


def multiples(step: int) -> SizeRule:
    """The positive multiples of ``step``."""
    return SizeRule(min=step, step=step)


def _runs(module, shape: tuple[int, ...], spatial_dims: Sequence[int], same_size: bool) -> bool:
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    try:
        outs = forward(module, [x])
    except Exception:
        return False
    if not same_size:
        return True
    return all(
        o.ndim == x.ndim and all(o.shape[d] == x.shape[d] for d in spatial_dims) for o in outs if o.ndim > 2
    )


def downsampling_step(
    module, channels: int, spatial: int, *, same_size: bool, base: int | None = None
) -> int:
    """The smallest power of two ``s`` such that sizes ``k * s`` run (see the module docstring)."""
    base = base or (128 if spatial <= 2 else 64)
    spatial_dims = list(range(2, 2 + spatial))
    s = 1
    while s <= MAX_STEP:
        size = base + s if s < base else s
        if _runs(module, (1, channels, *([size] * spatial)), spatial_dims, same_size):
            return s
        s *= 2
    raise PackagingError(
        f"the network fails on every input size tried (multiples of 1 to {MAX_STEP} px around {base}); "
        "check that it takes (batch, channel, space...) input, or give the step explicitly"
    )


def smallest_size(module, channels: int, spatial: int, step: int, *, at_least: int = 1) -> int:
    """The smallest multiple of ``step`` (>= ``at_least``) on which the network runs."""
    first = multiples(step).valid(at_least)
    for size in range(first, first + 64 * step, step):
        if _runs(module, (1, channels, *([size] * spatial)), [], same_size=False):
            return size
    raise PackagingError(f"the network does not run on any input size from {at_least} px in steps of {step}")


def _gradient_reach(
    module, shape: tuple[int, ...], step: int, outputs: Sequence[int], repeats: int = 2
) -> int:
    """Farthest input pixel (along any spatial axis) that an output pixel depends on, from the
    support of the input gradient.

    One batch holds ``repeats * step`` random inputs; element ``k`` back-propagates from the output
    pixel at ``centre + k % step`` (every position relative to the pooling grid). Batch elements
    are independent in eval mode, so each gradient belongs to its own centre.
    """
    torch = import_torch()
    n = repeats * step
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((n, *shape[1:]), generator=gen).requires_grad_(True)
    centre = shape[2] // 2
    spatial = len(shape) - 2
    with torch.enable_grad():
        outs = module(x)
        outs = [outs] if isinstance(outs, torch.Tensor) else list(outs)
        total = 0
        for k in range(n):
            index = (k, slice(None), *([centre + k % step] * spatial))
            total = total + sum(outs[i][index].sum() for i in outputs)
        (grad,) = torch.autograd.grad(total, x)
    support = grad.detach().abs().sum(dim=1).numpy() > 0  # (n, *space)
    reach = 0
    for k in range(n):
        c = centre + k % step
        for d in range(spatial):
            other = tuple(j for j in range(spatial) if j != d)
            where = np.flatnonzero(support[k].any(axis=other) if other else support[k])
            if where.size:
                reach = max(reach, int(abs(where[0] - c)), int(abs(where[-1] - c)))
    return reach


def receptive_field_radius(module, channels: int, spatial: int, step: int, outputs: Sequence[int]) -> int:
    """The measured receptive-field radius in input pixels (largest over the spatial axes and over
    the positions relative to the pooling grid).

    Measured from input gradients, which see every path through the network even where a random
    perturbation would decay below any threshold (untrained or briefly trained weights).
    """
    sizes = PROBE_SIZES.get(spatial, PROBE_SIZES[3])
    for probe in sizes:
        size = multiples(step).valid(probe)
        reach = _gradient_reach(module, (1, channels, *([size] * spatial)), step, outputs)
        if reach < size // 2 - step - 1:
            return reach
    raise PackagingError(
        f"the receptive field reaches beyond {sizes[-1] // 2} px: give the halo explicitly (halo=...)"
    )


def measure(
    module,
    *,
    channels: int,
    spatial: int,
    spatial_outputs: Sequence[int],
    step: int | None = None,
    halo: int | None = None,
) -> Geometry:
    """Step, halo and minimum size of ``module`` (a frozen, eval-mode copy).

    ``spatial_outputs`` are the indices of the outputs that keep the input's spatial axes
    (image-to-image); the others are one value per image and need no halo.
    """
    same_size = bool(spatial_outputs)
    if step is None:
        step = downsampling_step(module, channels, spatial, same_size=same_size)
    if step < 1:
        raise PackagingError(f"the down-sampling step must be at least 1, got {step}")
    if not spatial_outputs:
        return Geometry(step, smallest_size(module, channels, spatial, step, at_least=8), 0, None)
    rf = receptive_field_radius(module, channels, spatial, step, spatial_outputs)
    if halo is None:
        halo = multiples(step).valid(rf)
    elif halo < rf:
        log.warning(
            "halo=%d px is smaller than the measured receptive-field radius %d px: tiled predictions may "
            "show seams (halo=%d would avoid them)",
            halo,
            rf,
            multiples(step).valid(rf),
        )
    min_size = multiples(step).valid(2 * halo + 1)  # the smallest multiple of step above 2 * halo
    return Geometry(step, min_size, halo, rf)
