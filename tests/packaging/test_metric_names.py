"""Metric names in a package: bioimage.io's evaluation ``metrics`` field takes at most 16 characters, so
a longer name is shortened there and written in full at the head of ``metrics_long``; everywhere else
(``config.emzoo.evaluation``, ``evaluation.json``, the card) the use case's own names are kept."""

from __future__ import annotations

from emzoo.metrics import full_name, short_names
from emzoo.packaging.descr import evaluation_descr
from tests.packaging.conftest import unet_info


def _evaluation(**extra):
    return {
        "dataset_role": "test",
        "sample_count": 2,
        "metrics": {"dice": 0.8, "adapted_rand_error": 0.1, "membrane_adapted_rand_error": 0.2},
        **extra,
    }


def test_long_names_are_shortened_for_bioimageio_and_kept_in_metrics_long():
    ev = evaluation_descr(_evaluation(), unet_info())
    assert ev.metrics == ["dice", "adapted_rand_err", "membrane_adapted"]
    assert ev.metrics_long == ["dice", "adapted_rand_error", "membrane_adapted_rand_error"]
    assert [full_name(s, long) for s, long in zip(ev.metrics, ev.metrics_long, strict=True)] == [
        "dice",
        "adapted_rand_error",
        "membrane_adapted_rand_error",
    ]


def test_a_description_keeps_the_full_name_in_front():
    described = {"adapted_rand_error": "1 - Rand F-score of the cells", "dice": "Dice of the membranes"}
    ev = evaluation_descr(_evaluation(metrics_long=described), unet_info())
    assert ev.metrics_long[:2] == [
        "Dice of the membranes",
        "adapted_rand_error: 1 - Rand F-score of the cells",
    ]
    assert full_name(ev.metrics[1], ev.metrics_long[1]) == "adapted_rand_error"


def test_short_names_stay_distinct():
    names = ["detection_precision_a", "detection_precision_b"]
    assert short_names(names) == ["detection_precis", "detection_prec_2"]
    assert all(len(s) <= 16 for s in short_names(names))
