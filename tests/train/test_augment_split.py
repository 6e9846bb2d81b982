"""Augmentation (identical for image and label, reproducible) and the documented splits."""

from __future__ import annotations

import numpy as np
import pytest

from emzoo.train.augment import Augmentation, elastic_deform, intensity_jitter, random_crop
from emzoo.train.data import PairDataset
from emzoo.train.split import block_split, natural_key, seeded_split


def _pair():
    image = np.arange(2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16)  # two channels
    return image, image[:1].copy()  # the label is a copy of the first channel


@pytest.mark.parametrize("seed", range(8))
def test_geometry_is_the_same_for_image_and_label(seed):
    image, label = _pair()
    x, y = Augmentation(crop=(8, 8), intensity=0.0)(image, label, np.random.default_rng(seed))
    assert x.shape == (2, 8, 8) and y.shape == (1, 8, 8)
    np.testing.assert_array_equal(x[:1], y)
    assert x.flags.c_contiguous and y.flags.c_contiguous


def test_intensity_jitter_changes_the_image_only_unless_asked():
    image, label = _pair()
    x, y = Augmentation(flips=False, rot90=False, intensity=0.5)(image, label, np.random.default_rng(1))
    assert not np.array_equal(x[:1], y) and np.array_equal(y, label)
    x, y = Augmentation(flips=False, rot90=False, intensity=0.5, jitter_label=True)(
        image, label, np.random.default_rng(1)
    )
    np.testing.assert_allclose(x[:1], y)
    assert intensity_jitter(image, 0.1, np.random.default_rng(0)).dtype == np.float32


def test_augmentation_is_reproducible_and_varies():
    image, label = _pair()
    aug = Augmentation(crop=(8, 8), intensity=0.1)
    a = aug(image, label, np.random.default_rng(5))
    b = aug(image, label, np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    outs = {aug(image, label, np.random.default_rng(s))[1].tobytes() for s in range(20)}
    assert len(outs) > 10


def test_crop_must_fit():
    image, label = _pair()
    with pytest.raises(ValueError, match="does not fit"):
        random_crop(image, label, (32, 8), np.random.default_rng(0))


def test_dataset_samples_depend_on_seed_epoch_and_index_only():
    image, label = _pair()
    ds = PairDataset([image], [label], augmentation=Augmentation(crop=(8, 8)), length=4, seed=3)
    first = [ds[i][0].numpy() for i in range(4)]
    np.testing.assert_array_equal(ds[2][0].numpy(), first[2])
    ds.set_epoch(1)
    assert not all(np.array_equal(ds[i][0].numpy(), first[i]) for i in range(4))
    whole = PairDataset([image], [label], names=["a.png"])
    assert len(whole) == 1 and whole[0][0].shape == (2, 16, 16) and whole.names == ["a.png"]


def test_block_split_keeps_neighbours_together():
    names = [f"{i}.png" for i in range(25)]
    split = block_split(reversed(names), val=3, test=5)
    assert split["train"] == names[:17] and split["val"] == names[17:20] and split["test"] == names[20:]


def test_seeded_split_is_reproducible_and_disjoint():
    names = [f"img_{i}.tif" for i in range(12)]
    a = seeded_split(names, val=2, test=3, seed=1)
    assert a == seeded_split(list(reversed(names)), val=2, test=3, seed=1)
    assert a != seeded_split(names, val=2, test=3, seed=2)
    assert sorted(a["train"] + a["val"] + a["test"], key=natural_key) == names
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (7, 2, 3)
    with pytest.raises(ValueError, match="none left to train"):
        seeded_split(names, val=6, test=6, seed=0)


def test_elastic_deformation_moves_image_and_label_together():
    """A bright square in the image and its label: after the deformation the label is still 0/1
    and still covers the (moved) bright pixels; the same generator state gives the same warp."""
    image = np.zeros((1, 64, 64), np.float32)
    image[0, 20:44, 20:44] = 1.0
    label = image > 0.5
    x, y = elastic_deform(image, label, 6.0, np.random.default_rng(3))
    assert x.shape == image.shape and x.dtype == np.float32 and y.dtype == bool
    assert not np.array_equal(y, label)  # it moved
    assert abs(int(y.sum()) - int(label.sum())) < 0.5 * label.sum()  # a bend, not a blow-up
    assert x[y].mean() > 0.8 and x[~y].mean() < 0.1  # image and label moved alike
    again = elastic_deform(image, label, 6.0, np.random.default_rng(3))
    np.testing.assert_array_equal(again[0], x)
    # the Augmentation applies it when asked, and not otherwise
    plain = Augmentation(flips=False, rot90=False)(image, label, np.random.default_rng(3))
    bent = Augmentation(flips=False, rot90=False, elastic=6.0)(image, label, np.random.default_rng(3))
    assert np.array_equal(plain[1], label) and not np.array_equal(bent[1], label)
