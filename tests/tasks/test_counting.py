"""Counts and centres from density maps (``emzoo.tasks.counting``), on synthetic maps with known blobs."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from emzoo.errors import InputError, PackageError
from emzoo.io.meta import Image, ImageMeta
from emzoo.package.spec import Axis, ModelSpec, TensorSpec
from emzoo.tasks.counting import (
    CountingConfig,
    count_map,
    count_outputs,
    counting_config,
    find_centres,
    nm_per_pixel,
    summary_row,
    write_centres_csv,
    write_counts_csv,
)
from emzoo.tasks.counting_figures import render_overlay, render_size_histogram

CENTRES = [(20, 30), (60, 90), (100, 40), (110, 110)]


def blobs(shape, centres, sigma=2.0, weights=None) -> np.ndarray:
    """Gaussian blobs at integer centres, each summing to ``weight`` (1 by default)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, np.float64)
    for k, (cy, cx) in enumerate(centres):
        g = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        out += g / g.sum() * (1.0 if weights is None else weights[k])
    return out.astype(np.float32)


def config(**kw) -> CountingConfig:
    return CountingConfig(**{"output": "density", "min_distance_px": 3, "threshold": 0.005, **kw})


def test_integral_counts_and_maxima_are_the_centres():
    density = blobs((128, 128), CENTRES)
    result = count_map(density, config())
    assert result.count == pytest.approx(len(CENTRES), abs=1e-4)
    assert result.n_centres == len(CENTRES)
    assert sorted(map(tuple, result.centres[:, :2].astype(int).tolist())) == sorted(CENTRES)
    assert result.axes == "yx" and result.method == "integral"
    assert np.all(np.diff(result.centres[:, 2]) <= 0)  # highest score first


def test_peaks_count_threshold_and_min_distance():
    density = blobs((128, 128), CENTRES, weights=[1, 1, 1, 0.05])  # the last one is faint
    assert count_map(density, config(count="peaks")).count == 3
    assert count_map(density, config(count="peaks", threshold=0.0)).count == 4
    close = blobs((64, 64), [(30, 30), (30, 34)], sigma=1.0)
    assert count_map(close, config(count="peaks", min_distance_px=2, threshold=0.01)).n_centres == 2
    assert count_map(close, config(count="peaks", min_distance_px=5, threshold=0.01)).n_centres == 1


def test_smoothing_merges_noisy_tops_and_plateaus_count_once():
    rng = np.random.default_rng(0)
    wide = blobs((96, 96), [(48, 48)], sigma=6.0) + rng.normal(0, 2e-4, (96, 96)).astype(np.float32)
    raw = find_centres(wide, min_distance_px=1, threshold=0.002)
    smooth = find_centres(wide, min_distance_px=1, threshold=0.002, smooth_sigma_px=2.0)
    assert len(raw) > 1 and len(smooth) == 1
    assert np.allclose(smooth[0, :2], [48, 48], atol=1)
    flat = np.zeros((20, 20), np.float32)
    flat[5:8, 5:8] = 1.0
    assert find_centres(flat, min_distance_px=1).tolist() == [[5.0, 5.0, 1.0]]
    assert find_centres(np.zeros((8, 8))).shape == (0, 3)


def test_3d_maps_and_leading_axes():
    volume = np.zeros((1, 1, 16, 32, 32), np.float32)
    volume[0, 0, 8, 10, 20] = 1.0
    volume[0, 0, 3, 25, 5] = 0.5
    result = count_map(volume, config(threshold=0.1))
    assert result.axes == "zyx" and result.count == pytest.approx(1.5)
    assert result.centres.tolist() == [[8, 10, 20, 1.0], [3, 25, 5, 0.5]]
    with pytest.raises(InputError, match="2D"):
        count_map(np.zeros(5), config())


def test_count_outputs_takes_images_or_arrays():
    density = blobs((64, 64), [(20, 20), (40, 44)])
    image = Image(density, ImageMeta(axes="yx"))
    assert count_outputs({"density": image}, config()).count == pytest.approx(2, abs=1e-4)
    assert count_outputs({"density": density[None]}, config()).n_centres == 2
    with pytest.raises(InputError, match="no output 'density'"):
        count_outputs({"other": density}, config())


def _spec(emzoo: dict, spatial: bool = True) -> ModelSpec:
    yx = (Axis("y", "space"), Axis("x", "space"))
    raw = TensorSpec("raw", (Axis("batch", "batch"), Axis("channel", "channel", channel_names=("raw",)), *yx))
    out = (Axis("batch", "batch"), Axis("channel", "channel", channel_names=("d",)), *(yx if spatial else ()))
    return ModelSpec("counter", "", "0.5.4", (raw,), (TensorSpec("density", out),), {}, emzoo=emzoo)


def test_counting_config_read_from_the_package_description():
    assert counting_config(_spec({})) is None
    settings = {
        "output": "density",
        "count": "peaks",
        "min_distance_px": 4,
        "threshold": 0.01,
        "smooth_sigma_px": 1,
    }
    found = counting_config(_spec({"counting": settings}))
    assert found == CountingConfig("density", "peaks", 4, 0.01, 1.0)
    assert found.to_dict() == {**settings, "threshold": 0.01, "smooth_sigma_px": 1.0}
    with pytest.raises(PackageError, match="not an output"):
        counting_config(_spec({"counting": {"output": "counts"}}))
    with pytest.raises(PackageError, match="no spatial axes"):
        counting_config(_spec({"counting": {"output": "density"}}, spatial=False))
    with pytest.raises(PackageError, match="'integral' or 'peaks'"):
        CountingConfig.from_dict({"output": "density", "count": "sum"})
    with pytest.raises(PackageError, match="unknown key"):
        CountingConfig.from_dict({"output": "density", "radius": 3})
    with pytest.raises(PackageError, match="min_distance_px must be >= 1"):
        CountingConfig.from_dict({"output": "density", "min_distance_px": 0})


def test_csv_files_and_summary_row(tmp_path):
    result = count_map(blobs((64, 64), [(10, 12), (40, 50)]), config())
    path = write_centres_csv(tmp_path / "sub" / "a_centres.csv", result)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["y", "x", "score"]
    assert sorted((int(r[0]), int(r[1])) for r in rows[1:]) == [(10, 12), (40, 50)]
    assert float(rows[1][2]) == pytest.approx(result.centres[0, 2], rel=1e-5)
    row = summary_row("in/a.tif", result)
    assert row == {"file": "in/a.tif", "count": 2.0}  # one count: no second, conflicting number
    table = write_counts_csv(
        tmp_path / "counts.csv", [row, summary_row("b.tif", count_map(np.zeros((8, 8)), config()))]
    )
    assert table.read_text().splitlines() == ["file,count", "in/a.tif,2.0", "b.tif,0.0"]
    assert not list(tmp_path.glob(".*partial*"))


def test_sizes_are_read_at_the_centres_and_reported_in_px_and_nm(tmp_path):
    density = blobs((64, 64), [(10, 12), (40, 50)])
    sizes = np.zeros((64, 64), np.float32)
    sizes[10, 12], sizes[40, 50] = 6.0, 10.0
    cfg = config(count="peaks", sizes="diameter")
    result = count_outputs({"density": density, "diameter": sizes[None]}, cfg)
    assert result.count == 2 and sorted(result.diameters.tolist()) == [6.0, 10.0]
    nm = nm_per_pixel(ImageMeta(axes="yx", pixel_size={"y": 0.5, "x": 0.5}, unit="nm"))
    assert nm == 0.5 and nm_per_pixel(ImageMeta(axes="yx")) is None
    rows = list(csv.reader(write_centres_csv(tmp_path / "c.csv", result, nm_per_px=nm).open()))
    assert rows[0] == ["y", "x", "diameter_px", "diameter_nm", "score"]
    assert {(r[2], r[3]) for r in rows[1:]} == {("6.00", "3"), ("10.00", "5")}
    row = summary_row("a.tif", result, nm_per_px=nm)
    assert row == {
        "file": "a.tif",
        "count": 2.0,
        "mean_diameter_px": 8.0,
        "median_diameter_px": 8.0,
        "mean_diameter_nm": 4.0,
        "median_diameter_nm": 4.0,
    }
    table = write_counts_csv(
        tmp_path / "counts.csv", [row, summary_row("b.tif", count_map(np.zeros((8, 8)), cfg))]
    )
    assert table.read_text().splitlines()[0] == (
        "file,count,mean_diameter_px,median_diameter_px,mean_diameter_nm,median_diameter_nm"
    )
    with pytest.raises(InputError, match="no output 'diameter'"):
        count_outputs({"density": density}, cfg)


def test_overlay_circles_have_the_particle_radius_and_scale_with_the_image(tmp_path):
    from PIL import Image as PILImage

    image = np.full((2048, 2048), 90, np.uint8)
    result = count_outputs(
        {"density": blobs((2048, 2048), [(500, 600)], sigma=20), "d": np.full((2048, 2048), 80.0)},
        config(count="peaks", sizes="d", threshold=1e-6),
    )
    png = np.asarray(PILImage.open(render_overlay(image, result, tmp_path / "o.png")))
    red = (png[..., 0] > 200) & (png[..., 1] < 100)
    assert red[500, 600 + 40] and red[500, 600 - 40] and not red[500, 600]
    assert red[500, 636:645].sum() >= 3  # lines of a few px on a 2048 px image, not 1 px
    legend = (png[..., 0] > 200) & (png[..., 1] > 200) & (png[..., 2] < 80)  # the yellow text
    assert legend[:120, :600].sum() > 200  # a legend big enough to read


def test_size_histogram_is_a_png(tmp_path):
    from PIL import Image as PILImage

    path = render_size_histogram(np.array([4.0, 5, 5, 6, 9]), tmp_path / "h.png", title="t", nm_per_px=2.0)
    assert PILImage.open(path).format == "PNG" and PILImage.open(path).size == (640, 420)
    assert render_size_histogram(np.zeros(0), tmp_path / "empty.png", title="none").is_file()


@pytest.mark.parametrize("axes", ["yx", "yxc", "cyx"])
def test_overlay_marks_the_centres(tmp_path, axes):
    from PIL import Image as PILImage

    image = np.full((64, 80), 100, np.uint8)
    image[::7] = 180
    if axes == "yxc":
        image = np.stack([image] * 3, axis=-1)
    elif axes == "cyx":
        image = image[None]
    result = count_map(blobs((64, 80), [(20, 30), (45, 60)]), config())
    path = render_overlay(image, result, tmp_path / "a_overlay.png", axes=axes, radius=4)
    png = np.asarray(PILImage.open(path))
    assert png.shape == (64, 80, 3)
    red = (png[..., 0] > 200) & (png[..., 1] < 100)
    assert red[20, 26] and red[45, 64]  # on the circles around (20, 30) and (45, 60)
    assert not red[5, 5]


def test_overlay_refuses_volumes(tmp_path):
    result = count_map(np.zeros((4, 8, 8), np.float32), config())
    with pytest.raises(InputError, match="2D"):
        render_overlay(np.zeros((4, 8, 8)), result, tmp_path / "x.png")
