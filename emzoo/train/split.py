"""Train / validation / test splits that are written down and reproducible.

Two ways, both pure functions of their arguments:

* :func:`seeded_split`: a random split of independent images, fixed by ``seed`` (same names and seed,
  same split, on every machine: the names are sorted before shuffling).
* :func:`block_split`: contiguous blocks of an ordered series (serial sections, a time series), so
  that neighbouring, strongly correlated slices do not end up on both sides of a split.

>>> block_split([f"{i}.png" for i in range(6)], val=1, test=2)["test"]
['4.png', '5.png']
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

ROLES = ("train", "val", "test")


def natural_key(name: str) -> list:
    """Sort key that puts ``2.png`` before ``10.png``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _check(n: int, val: int, test: int) -> None:
    if val < 0 or test < 0 or val + test >= n:
        raise ValueError(f"cannot take {val} validation and {test} test items from {n}: none left to train")


def seeded_split(names: Sequence[str], *, val: int, test: int, seed: int) -> dict[str, list[str]]:
    """Shuffle the (naturally sorted) names with ``seed``; the first ``test`` go to test, the next
    ``val`` to validation, the rest to training. Each list comes back naturally sorted."""
    ordered = sorted(names, key=natural_key)
    _check(len(ordered), val, test)
    order = np.random.default_rng(seed).permutation(len(ordered))
    picked = [ordered[i] for i in order]
    parts = {"test": picked[:test], "val": picked[test : test + val], "train": picked[test + val :]}
    return {role: sorted(parts[role], key=natural_key) for role in ROLES}


def block_split(names: Sequence[str], *, val: int, test: int) -> dict[str, list[str]]:
    """Contiguous blocks of the naturally sorted names: train first, then ``val``, then ``test``."""
    ordered = sorted(names, key=natural_key)
    _check(len(ordered), val, test)
    n_train = len(ordered) - val - test
    return {
        "train": ordered[:n_train],
        "val": ordered[n_train : n_train + val],
        "test": ordered[n_train + val :],
    }
