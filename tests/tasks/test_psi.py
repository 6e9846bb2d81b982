"""The probability score interpreter on synthetic logits: verdicts, the package entry, and a case where
the maximum softmax probability is fooled and PSI is not."""

from __future__ import annotations

import numpy as np
import pytest

from emzoo.errors import PackageError
from emzoo.tasks.psi import UNKNOWN, UNSURE, Psi


def _training(rng, n=300):
    """Two classes whose nodes live on different scales: node a's logits are about 10 for its own
    samples and 6 for the others; node b's about 2 and -2."""
    labels = np.repeat([0, 1], n)
    a = np.where(labels == 0, rng.normal(10, 1, 2 * n), rng.normal(6, 1, 2 * n))
    b = np.where(labels == 1, rng.normal(2, 1, 2 * n), rng.normal(-2, 1, 2 * n))
    return np.stack([a, b], axis=1), labels


def test_verdicts_class_unsure_unknown(rng):
    psi = Psi.fit(*_training(rng), ("a", "b"))
    scores = psi.scores(np.array([[11.0, -2.0], [6.0, 2.5], [10.0, 2.0], [6.0, -2.0]]))
    assert scores.shape == (4, 2) and np.all((scores >= 0) & (scores <= 1))
    assert [psi.verdict(s) for s in scores] == ["a", "b", UNSURE, UNKNOWN]


def test_psi_detects_unknowns_that_fool_the_softmax(rng):
    from scipy.special import softmax

    logits, labels = _training(rng)
    psi = Psi.fit(logits, labels, ("a", "b"))
    known, _ = _training(np.random.default_rng(1), n=100)
    # an unknown type: node a a little above its wrong samples, node b low; the softmax is certain it is a
    unknown = np.stack([rng.normal(7, 0.4, 200), rng.normal(-3, 1, 200)], axis=1)
    assert np.median(softmax(unknown, axis=1).max(axis=1)) > 0.99

    def auroc(known_scores, unknown_scores):  # P(score of a known > score of an unknown)
        k, u = np.asarray(known_scores)[:, None], np.asarray(unknown_scores)[None, :]
        return float(np.mean(k > u) + 0.5 * np.mean(k == u))

    msp = auroc(softmax(known, axis=1).max(axis=1), softmax(unknown, axis=1).max(axis=1))
    by_psi = auroc(psi.scores(known).max(axis=1), psi.scores(unknown).max(axis=1))
    assert by_psi > 0.95 and by_psi > msp + 0.2
    verdicts = [psi.verdict(s) for s in psi.scores(unknown)]
    assert np.mean([v in (UNKNOWN, UNSURE) for v in verdicts]) > 0.9  # the softmax said "a" for all
    assert np.mean([v == UNKNOWN for v in verdicts]) > 0.3
    truth = np.repeat(["a", "b"], 100)
    assert np.mean([psi.verdict(s) == c for s, c in zip(psi.scores(known), truth, strict=True)]) > 0.9


def test_a_logit_in_the_gap_below_the_correct_ones_is_no_claim(rng):
    """Node a's wrong logits stay below 2, its correct ones sit near 10: a logit of 7 is above every
    wrong one (W = 0) but below almost all correct ones; the ratio C / (C + W) alone would give 1."""
    labels = np.repeat([0, 1], 400)
    a = np.where(labels == 0, rng.normal(10, 1, 800), rng.normal(0, 0.5, 800))
    b = np.where(labels == 1, rng.normal(10, 1, 800), rng.normal(0, 0.5, 800))
    psi = Psi.fit(np.stack([a, b], axis=1), labels, ("a", "b"))
    z = np.array([[7.0, 0.0], [8.3, 0.0], [9.0, 0.0], [10.0, 0.0]])  # C_a about 0.001, 0.045, 0.16, 0.5
    scores = psi.scores(z)
    assert scores[0, 0] < psi.doubt and [psi.verdict(s) for s in scores] == [UNKNOWN, UNSURE, "a", "a"]
    assert np.all(np.diff(scores[:, 0]) >= 0)  # the PSI rises with the logit (up to 1)
    ratio_only = Psi.fit(np.stack([a, b], axis=1), labels, ("a", "b"), tail=1e-9)
    assert ratio_only.scores(z[:1])[0, 0] == 1.0


def test_package_entry_round_trips_and_is_checked(rng):
    psi = Psi.fit(*_training(rng), ("a", "b"), claim=0.6)
    again = Psi.from_dict(psi.to_dict())
    assert again.classes == ("a", "b") and again.claim == 0.6 and again.tail == psi.tail
    z = np.array([[9.0, 0.0], [6.5, 1.0]])
    np.testing.assert_allclose(again.scores(z), psi.scores(z), atol=1e-4)
    broken = {**psi.to_dict(), "correct_quantiles": [[0.0, 1.0]]}
    with pytest.raises(PackageError, match="101 quantiles per class"):
        Psi.from_dict(broken)
    with pytest.raises(PackageError, match="0 < tail <= 1"):
        Psi.from_dict({**psi.to_dict(), "tail": 0.0})
    with pytest.raises(PackageError, match="not a PSI description"):
        Psi.from_dict({"classes": ["a"]})
    with pytest.raises(ValueError, match="needs samples of its own"):
        Psi.fit(np.zeros((3, 2)), np.zeros(3, int), ("a", "b"))
