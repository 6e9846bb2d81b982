"""The probability score interpreter (PSI) for classifiers: is a sample one of the known classes, is the
network unsure, or is the sample of a type the network never saw?

After Matuszewski & Sintorn (2022), "Interpreting deep learning output for out-of-distribution
detection" (arXiv:2211.03637): each class node has its own decision boundary, so the same raw logit
means different things for different classes. For every class node ``k`` the distributions of its raw
logit are estimated post hoc, by running training samples through the trained network: over samples
of class ``k`` (*correct*) and over samples of the other classes (*wrong*). A new sample's logit
``z_k`` is then read against both: ``C_k(z)`` is the fraction of correct logits at or below ``z``
(how far ``z`` reaches into the correct distribution) and ``W_k(z)`` the fraction of wrong logits at
or above ``z`` (how far it reaches into the wrong one). The paper's ratio ``C / (C + W)`` says on
which side of the node's boundary ``z`` lies, but where the correct and wrong logits leave a gap it
is 1 for any ``z`` above every wrong logit, however far below the correct ones: a logit in the lower
tail of the correct distribution would count as a full claim only because no wrong logit reaches
it. A claim needs the sample inside the correct distribution *and* outside the wrong one, so the
correct evidence is weighed against the wrong one and against a tail level ``t`` (``tail``):

    PSI_k = C_k(z_k) / (max(C_k(z_k), t) + W_k(z_k)).

Inside the correct distribution (``C >= t``) it is the paper's ratio; in its lowest ``t`` it falls
with ``C`` to 0 (``C / t`` where no wrong logit reaches ``z``). PSI_k rises with ``z_k``; near 1: the
node claims the sample, near 0: it rejects it. The verdict: one node claims it (PSI >= ``claim``)
-> that class; several claim it, or the best only half-claims it (>= ``doubt``) -> ``"unsure"``;
no node claims it -> ``"unknown"`` (an outlier, out of distribution). With the defaults (``t``
0.1, ``claim`` 0.5, ``doubt`` 0.1) and no wrong logit near: a logit in the lowest 5 % of its node's
correct logits is no claim, one in the lowest 1 % of every node's is unknown. The distributions are
fitted on the unit that is predicted (e.g. a whole image's logits, not a patch's) and stored as
quantiles (``config.emzoo.psi`` of a package), so no training data ships with a model.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> labels = np.repeat([0, 1], 200)
>>> logits = rng.normal(0, 0.5, (400, 2)) + 6 * np.eye(2)[labels]  # the true class's node is high
>>> psi = Psi.fit(logits, labels, ("a", "b"))
>>> z = np.array([[6.0, 0.0], [0.0, 6.0], [6.0, 6.0], [0.0, 0.0], [4.7, 0.0]])
>>> [psi.verdict(s) for s in psi.scores(z)]  # the last: in the gap, below 99 % of a's correct logits
['a', 'b', 'unsure', 'unknown', 'unknown']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emzoo.errors import PackageError

__all__ = ["UNKNOWN", "UNSURE", "Psi"]

UNSURE, UNKNOWN = "unsure", "unknown"
_QUANTILES = np.linspace(0.0, 1.0, 101)


def _below(quantiles: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Fraction of a distribution (given by its quantiles at ``_QUANTILES``) at or below ``z``."""
    return np.interp(z, quantiles, _QUANTILES, left=0.0, right=1.0)


@dataclass(frozen=True)
class Psi:
    """Per class node the quantiles of its correct and wrong logits; ``claim``: the PSI at which a
    node claims a sample; ``doubt``: below it the node does not even half-claim it; ``tail``: the
    share of a node's correct logits below which a logit counts as outside them (``t`` above)."""

    classes: tuple[str, ...]
    correct: np.ndarray  # (n_classes, 101) quantiles of the node's logit over its own class's samples
    wrong: np.ndarray  # (n_classes, 101) ... over the other classes' samples
    claim: float = 0.5
    doubt: float = 0.1
    tail: float = 0.1

    @classmethod
    def fit(cls, logits: np.ndarray, labels: np.ndarray, classes: Sequence[str], **thresholds) -> Psi:
        """The distributions from raw logits ``(n, n_classes)`` of training samples with true
        ``labels`` ``(n,)`` (class indices); every class needs samples of its own and of others."""
        z, y = np.asarray(logits, np.float64), np.asarray(labels)
        if z.ndim != 2 or z.shape[1] != len(classes) or len(y) != len(z):
            raise ValueError(f"need logits (n, {len(classes)}) and n labels, got {z.shape} and {y.shape}")
        correct, wrong = [], []
        for k in range(len(classes)):
            own, other = z[y == k, k], z[y != k, k]
            if len(own) == 0 or len(other) == 0:
                raise ValueError(f"class {classes[k]!r} needs samples of its own and of other classes")
            correct.append(np.quantile(own, _QUANTILES))
            wrong.append(np.quantile(other, _QUANTILES))
        return cls(tuple(classes), np.array(correct), np.array(wrong), **thresholds)

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """PSI per sample and class, ``(n, n_classes)`` in 0..1, for raw logits ``(n, n_classes)``."""
        z = np.atleast_2d(np.asarray(logits, np.float64))
        if z.shape[1] != len(self.classes):
            raise ValueError(f"need {len(self.classes)} logits per sample, got {z.shape[1]}")
        c = np.stack([_below(self.correct[k], z[:, k]) for k in range(len(self.classes))], axis=1)
        w = np.stack([1.0 - _below(self.wrong[k], z[:, k]) for k in range(len(self.classes))], axis=1)
        # W counts the wrong logits at or above z: the fraction strictly below, taken from 1
        return c / np.maximum(np.maximum(c, self.tail) + w, 1e-12)

    def verdict(self, psi: np.ndarray) -> str:
        """The class, ``"unsure"`` or ``"unknown"`` for one sample's PSI scores: one node at or above
        ``claim`` -> its class; several, or none but the best at or above ``doubt`` -> unsure; every
        node below ``doubt`` (the sample lies in no node's correct distribution) -> unknown."""
        psi = np.asarray(psi, np.float64)
        claims = np.flatnonzero(psi >= self.claim)
        if len(claims) == 1:
            return self.classes[int(claims[0])]
        if len(claims) > 1 or psi.max() >= self.doubt:
            return UNSURE
        return UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        """The ``config.emzoo.psi`` entry of a package (quantiles rounded to 6 significant digits)."""
        return {
            "classes": list(self.classes),
            "correct_quantiles": [[float(f"{v:.6g}") for v in row] for row in self.correct],
            "wrong_quantiles": [[float(f"{v:.6g}") for v in row] for row in self.wrong],
            "claim": self.claim,
            "doubt": self.doubt,
            "tail": self.tail,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "config.emzoo.psi") -> Psi:
        """Checked construction from a package's entry; a problem is a :class:`PackageError`."""
        try:
            classes = tuple(str(c) for c in d["classes"])
            correct = np.asarray(d["correct_quantiles"], np.float64)
            wrong = np.asarray(d["wrong_quantiles"], np.float64)
            claim, doubt = float(d.get("claim", 0.5)), float(d.get("doubt", 0.1))
            tail = float(d.get("tail", 0.1))
        except (KeyError, TypeError, ValueError) as e:
            raise PackageError(f"{where} is not a PSI description ({type(e).__name__}: {e})") from None
        shape = (len(classes), len(_QUANTILES))
        if correct.shape != shape or wrong.shape != shape or not (0 < doubt <= claim <= 1 and 0 < tail <= 1):
            raise PackageError(
                f"{where}: need {shape[1]} quantiles per class for {len(classes)} classes, "
                "0 < doubt <= claim <= 1 and 0 < tail <= 1"
            )
        if np.any(np.diff(correct, axis=1) < 0) or np.any(np.diff(wrong, axis=1) < 0):
            raise PackageError(f"{where}: quantiles must not decrease")
        return cls(classes, correct, wrong, claim, doubt, tail)
