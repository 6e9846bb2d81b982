"""emzoo.metrics: each metric on small arrays whose answer is known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from emzoo import metrics as M


def test_pixel_error_and_dice_threshold_probabilities():
    truth = np.array([[1, 1, 0, 0]], bool)
    prob = np.array([[0.9, 0.4, 0.6, 0.1]])
    assert M.pixel_error(prob, truth) == 0.5
    assert M.dice(prob, truth) == pytest.approx(0.5)  # 1 overlap, 2 + 2 positives
    assert M.dice(np.zeros((2, 2)), np.zeros((2, 2), bool)) == 1.0
    assert M.pixel_error(truth, truth) == 0.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        M.dice(np.zeros((2, 2)), np.zeros((3, 2)))


def _two_cells():
    """A 6x7 image: two cells separated by a 1-px membrane column (membrane = True)."""
    membrane = np.zeros((6, 7), bool)
    membrane[:, 3] = True
    return membrane


def test_adapted_rand_perfect_merge_and_split():
    truth = _two_cells()
    assert M.membrane_adapted_rand_error(truth, truth) == 0.0
    merged = np.zeros_like(truth)  # no membrane predicted: both cells become one
    assert M.membrane_adapted_rand_error(merged, truth) > 0.3
    split = truth.copy()
    split[3, :] = True  # a membrane through both cells: four pieces
    assert M.membrane_adapted_rand_error(split, truth) > 0.3


def test_adapted_rand_is_foreground_restricted():
    truth = _two_cells()
    thick = truth.copy()
    thick[:, 2:5] = True  # the true membrane column is still inside; only cell pixels change
    thin_shifted = np.zeros_like(truth)
    thin_shifted[:, 3] = True
    # predicted membranes over true membrane pixels cost nothing (those pixels are ignored)
    assert M.membrane_adapted_rand_error(thin_shifted, truth) == 0.0
    # predicted membrane pixels inside true cells count as single-pixel segments, not one object
    assert 0 < M.membrane_adapted_rand_error(thick, truth) < 0.6


def test_adapted_rand_predicted_boundary_is_not_one_segment():
    truth = np.array([[1, 1, 0, 2, 2]])
    seg = np.array([[0, 0, 0, 0, 0]])  # everything "boundary" in the proposal
    # one big segment would be a perfect merge-free recall; singletons give error 1
    assert M.adapted_rand_error(seg, truth) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no foreground"):
        M.adapted_rand_error(seg, np.zeros_like(truth))


def test_psnr_and_ssim():
    target = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    assert M.psnr(target, target) == float("inf")
    assert M.psnr(target + 0.1, target, data_range=1.0) == pytest.approx(20.0)
    assert M.ssim(target, target) == pytest.approx(1.0)
    noisy = target + np.random.default_rng(0).normal(0, 0.2, target.shape)
    assert M.ssim(noisy, target) < 0.9
    with pytest.raises(ValueError, match="constant"):
        M.psnr(target, np.zeros_like(target))


def test_count_metrics():
    assert M.count_mae(np.array([10, 12]), np.array([11, 10])) == 1.5
    assert M.count_relative_error(np.array([9, 30]), np.array([10, 20])) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="> 0"):
        M.count_relative_error(np.array([1]), np.array([0]))


def test_detection_precision_recall_f1():
    true = np.array([[0, 0], [10, 10], [20, 20]])
    pred = np.array([[1, 0], [10, 12], [50, 50], [0, 1]])  # two of the true points found
    assert M.match_points(pred, true, max_distance=3) == 2
    assert M.detection_precision(pred, true, max_distance=3) == 0.5
    assert M.detection_recall(pred, true, max_distance=3) == pytest.approx(2 / 3)
    assert M.detection_f1(pred, true, max_distance=3) == pytest.approx(4 / 7)
    empty = np.zeros((0, 2))
    assert M.detection_f1(empty, empty, max_distance=3) == 1.0
    assert M.detection_recall(empty, true, max_distance=3) == 0.0


# -- the ISBI 2012 challenge's V_rand and V_info ----------------------------------------------------


def _cells(shape, walls_y=(), walls_x=(), width=1):
    """A membrane mask with horizontal walls at rows ``walls_y`` and vertical ones at ``walls_x``."""
    membrane = np.zeros(shape, bool)
    for y in walls_y:
        membrane[y : y + width] = True
    for x in walls_x:
        membrane[:, x : x + width] = True
    return membrane


def test_v_rand_and_v_info_of_a_perfect_split_merge_and_thick_border():
    truth = _cells((40, 40), walls_x=(19,))
    assert M.v_rand(truth.astype(float), truth) == 1.0 and M.v_info(truth.astype(float), truth) == 1.0
    # one cell where there are two halves: Rand 0.5 / (0.5 * 0.5 + 0.5 * 1), information 0
    merged = np.zeros((40, 40))
    assert M.v_rand(merged, truth) == pytest.approx(2 / 3, abs=0.01)
    assert M.v_info(merged, truth) == pytest.approx(0.0, abs=1e-9)
    # each half cut in two: about the mirror image (a split instead of a merge), a little lower as
    # the false wall's pixels inside true cells count as singletons
    split = _cells((40, 40), walls_x=(19,), walls_y=(19,)).astype(float)
    assert 0.6 < M.v_rand(split, truth) < 2 / 3
    assert 0.5 < M.v_info(split, truth) < 0.8
    # a 5 px wide predicted membrane is thinned to 1 px: no penalty for the border's width
    thick = _cells((40, 40), walls_x=(17,), width=5).astype(float)
    assert M.v_rand(thick, truth) == pytest.approx(1.0, abs=1e-3)


def test_v_rand_takes_the_best_threshold_of_a_probability_map():
    truth = _cells((32, 32), walls_x=(15,))
    probability = np.where(truth, 0.6, 0.4)
    probability[:, 5] = 0.45  # a faint false wall, gone above threshold 0.45
    assert M.v_rand(probability, truth) == 1.0
    # at 0.3 everything is membrane, thinned to a skeleton: one cell, a merge of the two
    assert M.v_rand(probability, truth, thresholds=(0.3,)) == pytest.approx(2 / 3, abs=0.05)
    assert M.v_rand(probability, truth, thresholds=(0.42,)) < 1.0  # the false wall splits a cell
