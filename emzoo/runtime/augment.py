"""Test-time augmentation: the network run on flipped and rotated copies of each block, the outputs
turned back and averaged (before any post-processing, so before thresholds).

The transforms are those of the square's symmetry group on the ``y, x`` plane: 8 (4 rotations by
90 degrees, each also mirrored) where a rotation keeps the block's shape and the pixels are square,
else the 4 that never swap ``y`` and ``x`` (identity, the two flips, the half turn). Other axes
(``z``, channels, batch) are left alone, so a 2D model on a volume is augmented slice by slice.

>>> import numpy as np
>>> a = np.arange(6).reshape(1, 2, 3)
>>> [t for t in transforms(rotations=False)]
[(0, False), (0, True), (2, False), (2, True)]
>>> all(np.array_equal(undo(apply(a, t, (1, 2)), t, (1, 2)), a) for t in transforms(rotations=False))
True
"""

from __future__ import annotations

import numpy as np

__all__ = ["Transform", "apply", "transforms", "undo"]

Transform = tuple[int, bool]  # (quarter turns in the y-x plane, mirrored along x first)


def transforms(*, rotations: bool) -> list[Transform]:
    """The identity first, then the other transforms of the group (8 with ``rotations``, else 4)."""
    turns = (0, 1, 2, 3) if rotations else (0, 2)
    return [(k, flip) for k in turns for flip in (False, True)]


def apply(array: np.ndarray, transform: Transform, yx: tuple[int, int]) -> np.ndarray:
    """``array`` mirrored along ``x`` (when the transform says so), then turned ``k`` quarter turns
    in the plane of its axes ``yx`` (indices)."""
    k, flip = transform
    out = np.flip(array, axis=yx[1]) if flip else array
    return np.ascontiguousarray(np.rot90(out, k, axes=yx)) if k else np.ascontiguousarray(out)


def undo(array: np.ndarray, transform: Transform, yx: tuple[int, int]) -> np.ndarray:
    """The inverse of :func:`apply`: turned back, then mirrored back."""
    k, flip = transform
    out = np.rot90(array, -k, axes=yx) if k else array
    return np.ascontiguousarray(np.flip(out, axis=yx[1]) if flip else out)
