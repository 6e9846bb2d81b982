"""Tiling and stitching as pure functions, checked with numpy "networks" of known receptive field."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from emzoo.package.spec import SizeRule as AxisRule
from emzoo.runtime.tiling import (
    OutputAxisMap,
    Stitcher,
    blend_weights,
    choose_block,
    iter_tiles,
    mirror_pad,
    plan_axis,
    read_block,
)


def box(radius: int):
    """A linear 'network' whose output at a pixel depends on inputs within ``radius`` (zero padded)."""
    return lambda x: ndimage.uniform_filter(x.astype(np.float64), size=2 * radius + 1, mode="constant")


def pooled(radius: int, factor: int):
    """Average-pool by ``factor``, box-filter, upsample: only exact when blocks start on the pool grid."""

    def run(x: np.ndarray) -> np.ndarray:
        h, w = x.shape
        small = x.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
        small = ndimage.uniform_filter(small, size=2 * radius + 1, mode="constant")
        return np.repeat(np.repeat(small, factor, axis=0), factor, axis=1)

    return run


def tiled(image, model, blocks, halos, *, align=1, blend=0, pad_before=0, maps=None):
    axes = [
        plan_axis(n, b, h, align=align, blend=blend, pad_before=pad_before)
        for n, b, h in zip(image.shape, blocks, halos, strict=True)
    ]
    stitcher = Stitcher(axes, (0, 1), maps)
    for tile in iter_tiles(axes):
        stitcher.add(tile, model(read_block(image, axes, tile, (0, 1))))
    return stitcher.result(), axes


@pytest.mark.parametrize(
    "length,block,halo,align",
    [(1000, 256, 20, 1), (4096, 920, 48, 8), (513, 96, 16, 8), (64, 96, 16, 8), (300, 300, 0, 1)],
)
def test_owned_regions_partition_the_axis_and_keep_their_halo(length, block, halo, align):
    ax = plan_axis(length, block, halo, align=align)
    assert all(s % align == 0 for s in ax.starts)
    assert ax.owns[0][0] == 0 and ax.owns[-1][1] == ax.extended >= length
    for j, (lo, hi) in enumerate(ax.owns):
        start = ax.starts[j]
        assert start <= lo < hi <= start + block
        if j > 0:
            assert lo == ax.owns[j - 1][1]  # no gap, no overlap
            assert lo - start >= halo
        if j < ax.n_blocks - 1:
            assert start + block - hi >= halo


def test_choose_block_prefers_the_cheapest_accepted_size():
    rule = AxisRule(min=96, step=8)
    n = choose_block(4096, rule, 48, align=8, max_block=1024)
    assert rule.accepts(n) and n <= 1024
    ax = plan_axis(4096, n, 48, align=8)
    cost = ax.n_blocks * n
    worst = plan_axis(4096, 1024, 48, align=8)
    assert cost <= worst.n_blocks * 1024
    assert choose_block(700, rule, 48, align=8, max_block=1024) == 704  # one block holds it all


def test_tiled_equals_whole_when_the_halo_covers_the_receptive_field(rng):
    image = rng.normal(size=(1030, 990))
    model = box(11)
    out, axes = tiled(image, model, (192, 200), (12, 12))
    assert axes[0].n_blocks * axes[1].n_blocks >= 16  # at least 4x larger than a tile per axis
    np.testing.assert_allclose(out, model(image), atol=1e-12)


def test_block_starts_on_the_pooling_grid_keep_tiling_exact(rng):
    image = rng.normal(size=(512, 512))
    model = pooled(3, 8)  # receptive field 3 pooled px = 24 px (+7 within a pool cell)
    out, _ = tiled(image, model, (128, 128), (30, 30), align=8)
    np.testing.assert_allclose(out, model(image), atol=1e-12)
    misaligned, _ = tiled(image, model, (128, 128), (30, 30), align=1)
    assert np.abs(misaligned - model(image)).max() > 1e-3  # why alignment matters


def test_models_that_crop_their_output_get_a_mirrored_border(rng):
    radius = 5
    image = rng.normal(size=(300, 280))

    def valid(x):  # like a network of unpadded convolutions: output smaller by 2*radius
        return box(radius)(x)[radius:-radius, radius:-radius]

    maps = [OutputAxisMap(1.0, -2 * radius)] * 2
    out, _ = tiled(image, valid, (64, 64), (radius + 6, radius + 6), pad_before=radius, maps=maps)
    reference = valid(mirror_pad(image, [(radius, radius), (radius, radius)]))
    assert out.shape == image.shape
    np.testing.assert_allclose(out, reference, atol=1e-12)


def test_outputs_at_another_scale(rng):
    image = rng.normal(size=(256, 320))

    def half(x):  # a network that halves the resolution
        h, w = x.shape
        return box(2)(x.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)))

    maps = [OutputAxisMap(0.5, 0)] * 2
    out, _ = tiled(image, half, (64, 64), (12, 12), align=2, maps=maps)
    np.testing.assert_allclose(out, half(image), atol=1e-12)


def test_blend_weights_sum_to_one(rng):
    ax = plan_axis(1000, 160, 4, align=8, blend=16)
    total = np.zeros(ax.extended)
    for j in range(ax.n_blocks):
        lo, hi = ax.owns[j]
        total[lo:hi] += blend_weights(ax, j)
    np.testing.assert_allclose(total[:1000], 1.0, atol=1e-6)


def test_blending_hides_seams_when_the_halo_is_too_small(rng):
    image = ndimage.gaussian_filter(rng.normal(size=(600, 600)), 2)
    model = box(16)
    whole = model(image)
    hard, _ = tiled(image, model, (128, 128), (2, 2))
    soft, _ = tiled(image, model, (128, 128), (2, 2), blend=24)
    err_hard, err_soft = np.abs(hard - whole), np.abs(soft - whole)
    assert err_soft.max() < 0.5 * err_hard.max()
    assert err_soft.mean() < 0.5 * err_hard.mean()


def test_read_block_mirrors_past_the_image_end():
    image = np.arange(10.0)[None, :] * np.ones((3, 1))
    ax = [plan_axis(3, 4, 0), plan_axis(10, 12, 0)]
    block = read_block(image, ax, next(iter_tiles(ax)), (0, 1))
    assert block.shape == (4, 12)
    np.testing.assert_array_equal(block[0, 10:], [9, 8])  # symmetric padding
    np.testing.assert_array_equal(block[3], block[2])


def test_three_dimensional_tiling(rng):
    volume = rng.normal(size=(40, 70, 66))
    model = lambda x: ndimage.uniform_filter(x, size=5, mode="constant")  # noqa: E731
    axes = [plan_axis(n, 24, 3) for n in volume.shape]
    stitcher = Stitcher(axes, (0, 1, 2))
    for tile in iter_tiles(axes):
        stitcher.add(tile, model(read_block(volume, axes, tile, (0, 1, 2))))
    np.testing.assert_allclose(stitcher.result(), model(volume), atol=1e-12)


@pytest.mark.parametrize("offset", [-10, 6])
def test_outputs_have_the_size_the_package_declares(rng, offset):
    """An output ``offset`` px larger (or smaller) than its input, centred on it, as one whole call
    gives it: tiles stitch to exactly that (the old convention mirrored a border in front)."""
    radius = 3
    image = rng.normal(size=(300, 280))
    pad = max(offset, 0) // 2

    def network(x):  # an output of size n + offset, centred on the input
        out = box(radius)(np.pad(x, pad)) if pad else box(radius)(x)
        cut = max(-offset, 0) // 2
        return out[cut : out.shape[0] - cut, cut : out.shape[1] - cut]

    maps = [OutputAxisMap(1.0, offset)] * 2
    out, _ = tiled(image, network, (64, 64), (radius + 6, radius + 6), maps=maps)
    assert out.shape == (300 + offset, 280 + offset)
    inner = slice(radius + 6, -(radius + 6))
    np.testing.assert_allclose(out[inner, inner], network(image)[inner, inner], atol=1e-12)
