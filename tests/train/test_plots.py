"""The run's curves (``plots/loss.png``, ``plots/metrics.png``): every label and tick label lies on the
canvas, also with the wide tick labels of a log-scale loss (``2 x 10^-1``)."""

from __future__ import annotations

import pytest
from PIL import Image

from emzoo.train import plots

# losses between 0.12 and 0.3 give log-scale minor tick labels such as 2 x 10^-1 and 3 x 10^-1
ROWS = [
    {
        "epoch": i,
        "train_loss": 0.3 / i + 0.1,
        "val_loss": 0.35 / i + 0.12,
        "val_dice": 0.5 + i / 100,
        "val_adapted_rand_error": 12345.678 / i,
    }
    for i in range(1, 40)
]


def _inside_canvas(fig) -> None:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width, height = fig.get_size_inches()
    box = fig.get_tightbbox(renderer)  # in inches
    assert box.x0 >= 0 and box.y0 >= 0, box
    assert box.x1 <= width + 1e-6 and box.y1 <= height + 1e-6, box
    canvas = fig.bbox  # in pixels
    for ax in fig.axes:  # each axis with its drawn tick labels and its label, and the title
        for name, extent in (
            ("y axis", ax.yaxis.get_tightbbox(renderer)),
            ("x axis", ax.xaxis.get_tightbbox(renderer)),
            *(
                (repr(t.get_text()), t.get_window_extent(renderer))
                for t in (ax.yaxis.label, ax.title)
                if t.get_text()
            ),
        ):
            assert extent.x0 >= canvas.x0 and extent.y0 >= canvas.y0, (name, extent)
            assert extent.x1 <= canvas.x1 and extent.y1 <= canvas.y1, (name, extent)


def test_loss_labels_fit_on_the_canvas(tmp_path):
    fig = plots.loss_figure(ROWS)
    assert fig.axes[0].get_yscale() == "log"
    _inside_canvas(fig)
    plots.plot_loss(ROWS, tmp_path / "loss.png")
    with Image.open(tmp_path / "loss.png") as png:
        assert png.size == (600, 400)  # the figure as laid out, not cropped to its contents


@pytest.mark.parametrize("names", [["dice"], ["dice", "adapted_rand_error"]])
def test_metric_labels_fit_on_the_canvas(tmp_path, names):
    _inside_canvas(plots.metrics_figure(ROWS, names, best_epoch=3))
    plots.plot_metrics(ROWS, names, tmp_path / "metrics.png", best_epoch=3)
    assert (tmp_path / "metrics.png").is_file()
