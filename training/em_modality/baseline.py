"""The classical baseline: nearest class centroid on hand-made texture features.

The features are the image features of emzoo's out-of-distribution check
(:data:`emzoo.tasks.ood.features.IMAGE_FEATURES`: the noise level relative to the image's spread, the
correlation of neighbouring noise along x and y, how unevenly local contrast is spread in 8 and 32 px
blocks, and whatever else that module measures), of a central crop of at most 512 px. Each feature
is standardised by its spread over the training images; an image belongs to the class whose training
images' mean (centroid) is nearest.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> def smooth(): return np.add.outer(np.arange(64.0), np.arange(64.0)) + rng.normal(0, 0.5, (64, 64))
>>> def noisy(): return rng.normal(0, 1, (64, 64))
>>> c = NearestCentroid.fit([smooth() for _ in range(3)] + [noisy() for _ in range(3)], [0, 0, 0, 1, 1, 1])
>>> c.predict(noisy()), c.predict(smooth())
(1, 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NAME = "nearest class centroid on the standardised image features of emzoo's out-of-distribution check"


def feature_names() -> list[str]:
    from emzoo.tasks.ood.features import IMAGE_FEATURES

    return [f.name for f in IMAGE_FEATURES]


def features(image: np.ndarray) -> np.ndarray:
    from emzoo.io.meta import Image, ImageMeta
    from emzoo.tasks.ood.features import IMAGE_FEATURES, image_features

    found = image_features(Image(np.asarray(image), ImageMeta(axes="yx")))
    return np.array([found.get(f.name, 0.0) for f in IMAGE_FEATURES], np.float64)


@dataclass(frozen=True)
class NearestCentroid:
    centroids: np.ndarray  # (classes, features), standardised
    center: np.ndarray
    scale: np.ndarray
    labels: tuple[int, ...]

    @classmethod
    def fit(cls, images: Sequence[np.ndarray], labels: Sequence[int]) -> NearestCentroid:
        f = np.stack([features(a) for a in images])
        center, scale = f.mean(axis=0), f.std(axis=0) + 1e-9
        z, y = (f - center) / scale, np.asarray(labels)
        classes = tuple(sorted(set(int(k) for k in y)))
        return cls(np.stack([z[y == k].mean(axis=0) for k in classes]), center, scale, classes)

    def predict(self, image: np.ndarray) -> int:
        z = (features(image) - self.center) / self.scale
        return self.labels[int(np.argmin(((self.centroids - z) ** 2).sum(axis=1)))]
