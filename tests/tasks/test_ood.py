"""The out-of-distribution check on synthetic images and features: the features, the nearest-reference
score and its calibration, the stored statistics, the verdict and what each --ood policy does."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from emzoo.errors import PackageError
from emzoo.io.meta import Image, ImageMeta
from emzoo.tasks.ood import Check, OutOfDistribution, Verdict, check_input, policy_note
from emzoo.tasks.ood.features import IMAGE_FEATURES, image_features
from emzoo.tasks.ood.score import (
    HELD_OUT_MARGIN,
    SCHEMA,
    OodStats,
    auroc,
    cross_fitted_false_warnings,
    fit,
    held_out_threshold,
    leave_one_out,
    schema_note,
    score,
)

PIXEL = {"training_data": {"pixel_size": {"y": 4.0, "x": 4.0}, "unit": "nanometer"}}
NAMES = [f.name for f in IMAGE_FEATURES]
FLOORS = [f.floor for f in IMAGE_FEATURES]


def tissue(rng, shape=(256, 256), noise=0.3):
    """Smooth texture everywhere plus white noise: an ssTEM-like image."""
    smooth = ndimage.gaussian_filter(rng.normal(size=shape), 3)
    return smooth / smooth.std() + rng.normal(0, noise, shape)


def stats_of(rows, names=NAMES, floors=FLOORS, image_features=None):
    n = len(names) if image_features is None else image_features
    return fit(rows, features=names, floors=floors, image_features=n)


def test_white_noise_and_scan_line_noise_differ_along_x_and_y(rng):
    white = image_features(Image(rng.normal(size=(256, 256)), ImageMeta(axes="yx")))
    assert white["corr_x"] == pytest.approx(-0.5, abs=0.03) and white["corr_y"] == pytest.approx(
        -0.5, abs=0.03
    )
    lines = ndimage.gaussian_filter1d(rng.normal(size=(256, 256)), 1.5, axis=1)  # correlated along x only
    scan = image_features(Image(lines, ImageMeta(axes="yx")))
    assert scan["corr_x"] > 0.3 and scan["corr_y"] == pytest.approx(-0.5, abs=0.05)


def test_particles_on_a_flat_support_are_unevenly_textured(rng):
    support = rng.normal(0, 0.05, (256, 256))
    yy, xx = np.mgrid[:256, :256]
    for cy, cx in rng.uniform(20, 236, (16, 2)):
        support += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 50)
    particles = image_features(Image(support, ImageMeta(axes="yx")))
    textured = image_features(Image(tissue(rng), ImageMeta(axes="yx")))
    assert particles["texture32_high"] > textured["texture32_high"] + 0.2


def blobs(rng, shape=(256, 256), bright=True, n=24):
    """Compact particles on a flat, slightly noisy support (HAADF: bright; bright field: dark)."""
    support = rng.normal(0, 0.05, shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for cy, cx in rng.uniform(10, min(shape) - 10, (n, 2)):
        support += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18)
    return support if bright else -support


def test_the_power_spectrum_is_flat_for_white_noise_and_steep_for_smooth_structure(rng):
    white = image_features(Image(rng.normal(size=(512, 512)), ImageMeta(axes="yx")))
    smooth = image_features(
        Image(ndimage.gaussian_filter(rng.normal(size=(256, 256)), 4), ImageMeta(axes="yx"))
    )
    for k in (2, 4, 8):  # the finer octaves hold enough frequencies for a steady mean
        assert white[f"spectrum{k}px"] == pytest.approx(0.0, abs=0.25)
    assert smooth["spectrum2px"] > 3 and smooth["spectrum4px"] > 2


def test_band_sparsity_tells_compact_particles_from_noise(rng):
    noise = image_features(Image(rng.normal(size=(256, 256)), ImageMeta(axes="yx")))
    particles = image_features(Image(blobs(rng), ImageMeta(axes="yx")))
    for k in (1, 2, 4):
        assert noise[f"sparsity{k}px"] == pytest.approx(0.582, abs=0.05)
    assert particles["sparsity2px"] > noise["sparsity2px"] + 0.2


def test_the_histogram_shape_tells_bright_from_dark_particles(rng):
    bright = image_features(Image(blobs(rng), ImageMeta(axes="yx")))
    dark = image_features(Image(blobs(rng, bright=False), ImageMeta(axes="yx")))
    assert bright["asymmetry"] > 0.1 and dark["asymmetry"] < -0.1
    assert bright["tails"] == pytest.approx(dark["tails"], abs=0.1)


def test_flat_or_saturated_regions_give_bounded_features(rng):
    """A vacuum region of one grey value must not give a feature an unbounded log (it would dominate
    every distance): every log is bounded at 1 % of its reference value."""
    a = tissue(rng)
    a[:, :128] = 0.0  # half the image saturated black
    found = image_features(Image(a, ImageMeta(axes="yx")))
    assert all(np.isfinite(v) for v in found.values())
    assert found["texture8_low"] >= -2.0 and found["texture32_low"] >= -2.0 and found["noise"] > -3


def test_small_images_still_give_every_feature(rng):
    found = image_features(Image(rng.normal(size=(40, 40)), ImageMeta(axes="yx")))
    assert set(found) == set(NAMES) and all(np.isfinite(v) for v in found.values())


def test_features_use_the_middle_slice_and_average_channels(rng):
    volume = np.stack([np.zeros((64, 64)), tissue(rng, (64, 64)), np.zeros((64, 64))])
    assert image_features(Image(volume, ImageMeta(axes="zyx"))) == image_features(
        Image(volume[1], ImageMeta(axes="yx"))
    )
    rgb = np.repeat(volume[1][..., None], 3, axis=2)
    assert image_features(Image(rgb, ImageMeta(axes="yxc"))) == pytest.approx(
        image_features(Image(volume[1], ImageMeta(axes="yx")))
    )


def test_the_nearest_reference_keeps_two_modes_in_distribution(rng):
    """Bright-field and HAADF: two clusters; a point in either is in, one beside both is out."""
    names, floors = ["a", "b"], [0.01, 0.01]
    rows = [{"a": -3 + rng.normal(0, 0.1), "b": rng.normal(0, 0.1)} for _ in range(8)]
    rows += [{"a": 3 + rng.normal(0, 0.1), "b": rng.normal(0, 0.1)} for _ in range(8)]
    stats = stats_of(rows, names, floors, 2)
    for a in (-3.0, 3.0):
        assert score(stats, {"a": a, "b": 0.0}).score < stats.threshold
    beside = score(stats, {"a": 3.0, "b": 1.0})
    assert beside.score > stats.threshold and beside.deviations[0][0] == "b"


def test_the_threshold_is_four_typical_spacings(rng):
    rows = [{"a": float(v), "b": 0.0} for v in rng.normal(0, 1, 20)]
    stats = stats_of(rows, ["a", "b"], [0.01, 0.01], 1)
    assert stats.threshold == pytest.approx(4 * np.median(leave_one_out(stats)))
    assert stats.calibration["reference_images"] == 20


def test_held_out_images_only_loosen_the_threshold(rng):
    """Near-duplicate training images (adjacent slices) lie far closer together than new images of
    their kind lie to them: held-out images raise the threshold to cover them, never lower it."""
    assert held_out_threshold(2.0, [0.1, 0.2, 0.3, 0.4]) == 2.0
    assert held_out_threshold(1.0, [1.0, 3.0]) == 1.0  # fewer than MIN_HELD_OUT: the rule stands
    held = rng.uniform(1.0, 3.0, 40)
    assert held_out_threshold(1.0, held) == pytest.approx(HELD_OUT_MARGIN * np.quantile(held, 0.99))


def test_the_false_warning_rate_is_cross_fitted(rng):
    """Each half of the held-out images is judged by the thresholds of the other half: images whose
    scores the other half covers pass; one far above every other does not; either score counts."""
    alike = np.column_stack([rng.uniform(1, 2, 20), rng.uniform(0, 0.5, 20)])
    assert cross_fitted_false_warnings([0.5, 1.0], alike) == 0.0
    alike[7, 1] = 50.0  # one held-out image unlike the others by its second score
    assert cross_fitted_false_warnings([0.5, 1.0], alike) == pytest.approx(1 / 20)
    assert cross_fitted_false_warnings([0.5], alike[:6, :1]) is None  # too few to split


def test_a_reference_image_scores_zero_and_features_it_lacks_use_the_image_threshold(rng):
    rows = [{"a": float(v), "out": float(v) * 2} for v in rng.normal(0, 1, 10)]
    stats = stats_of(rows, ["a", "out"], [0.01, 0.01], 1)
    assert score(stats, rows[3]).score == 0.0
    partial = score(stats, {"a": rows[3]["a"]})  # the outputs were not computed (streamed input)
    assert partial.score == 0.0 and partial.threshold == stats.threshold_image


def test_statistics_round_trip_and_malformed_ones_are_refused(rng):
    stats = stats_of(
        [{"a": float(v), "b": float(v) ** 2} for v in rng.normal(0, 1, 6)], ["a", "b"], [0.1, 0.1], 2
    )
    again = OodStats.from_dict(stats.to_dict())
    assert again.features == stats.features and again.threshold == pytest.approx(stats.threshold, rel=1e-5)
    broken = stats.to_dict() | {"center": [0.0]}
    with pytest.raises(PackageError, match=r"config\.emzoo\.ood is malformed"):
        OodStats.from_dict(broken)
    with pytest.raises(PackageError, match="malformed"):
        OodStats.from_dict({"features": ["a"]})


def test_statistics_of_another_schema_switch_the_check_off_with_a_note(rng):
    config = _package_config(rng)
    old = PIXEL | {"ood": config["ood"] | {"schema": SCHEMA - 1}}
    with pytest.raises(PackageError, match=f"schema {SCHEMA - 1}, this emzoo reads schema {SCHEMA}"):
        OodStats.from_dict(old["ood"])
    verdict = Check(old, Image(rng.normal(size=(256, 256)), ImageMeta(axes="yx"))).verdict()
    assert verdict.score is None and not verdict.out_of_distribution
    (note,) = verdict.reasons
    assert "emzoo calibrate" in note and "\n" not in note
    assert schema_note(config["ood"]) is None


def test_auroc():
    assert auroc([0.1, 0.2, 0.3], [0.4, 0.5]) == 1.0
    assert auroc([0.4, 0.5], [0.1, 0.2]) == 0.0
    assert auroc([0.1, 0.2], [0.3, 0.2]) == 0.875


def _package_config(rng) -> dict:
    rows = [image_features(Image(tissue(rng), ImageMeta(axes="yx"))) for _ in range(8)]
    return PIXEL | {"ood": stats_of(rows).to_dict()}


def test_an_image_like_the_training_images_passes_and_noise_does_not(rng):
    config = _package_config(rng)
    like = Check(config, Image(tissue(rng), ImageMeta(axes="yx"))).verdict()
    assert not like.out_of_distribution and like.score < like.threshold and like.reasons == ()
    noise = Check(config, Image(rng.normal(size=(256, 256)), ImageMeta(axes="yx"))).verdict()
    assert noise.out_of_distribution and noise.score > noise.threshold
    assert any("noise" in r for r in noise.reasons), noise.reasons
    assert check_input(config, Image(rng.normal(size=(256, 256)), ImageMeta(axes="yx")))[0].startswith(
        "out of distribution (score"
    )


def test_pixel_size_and_constant_images_are_reasons_of_their_own(rng):
    config = _package_config(rng)
    far = Image(tissue(rng), ImageMeta(axes="yx", pixel_size={"y": 6.67, "x": 6.67}, unit="angstrom"))
    verdict = Check(config, far).verdict()
    assert verdict.out_of_distribution and "pixel size along y/x is 0.667 nm" in verdict.reasons[0]
    near = Image(tissue(rng), ImageMeta(axes="yx", pixel_size={"y": 4.2, "x": 4.2}, unit="nanometer"))
    assert not Check(config, near).verdict().out_of_distribution
    constant = Check(config, Image(np.full((64, 64), 7, np.uint8), ImageMeta(axes="yx"))).verdict()
    assert constant.out_of_distribution and "constant" in constant.reasons[0]


def test_a_package_without_statistics_checks_the_pixel_size_only(rng):
    verdict = Check(PIXEL, Image(rng.normal(size=(64, 64)), ImageMeta(axes="yx"))).verdict()
    assert verdict == Verdict(None, None, False, ())
    assert check_input({}, Image(rng.normal(size=(8, 8)), ImageMeta(axes="yx"))) == []


def test_the_record_is_what_provenance_keeps():
    verdict = Verdict(2.345678, 1.5, True, ("its noise level is high",))
    assert verdict.record() == {
        "score": 2.3457,
        "threshold": 1.5,
        "out_of_distribution": True,
        "reasons": ["its noise level is high"],
    }


def test_each_policy():
    out = Verdict(3.0, 1.0, True, ("its noise level is high",))
    assert policy_note(Verdict(0.5, 1.0, False), "a.tif", "fail") is None
    assert policy_note(out, "a.tif", "warn").startswith("warning: a.tif: out of distribution (score 3 >")
    assert policy_note(out, "a.tif", "skip").startswith("skipped a.tif, no output written ({ood=skip})")
    with pytest.raises(OutOfDistribution, match=r"a.tif: out of distribution .*\(ood=fail\)"):
        policy_note(out, "a.tif", "fail")
