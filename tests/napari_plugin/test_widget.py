"""The "Run model" widget, headless (``ViewerModel``, offscreen Qt): open a file through the reader,
choose a zoo model, click Run, wait for the worker, get the output layers."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import numpy as np
from napari.components import ViewerModel
from napari.layers import Image, Points
from qtpy.QtCore import Qt

from emzoo.napari_plugin.reading import get_reader
from emzoo.napari_plugin.widget import RunModelWidget
from tests.napari_plugin.conftest import COUNTER, MEMBRANE, write_mrc

RUN_TIMEOUT_MS = 120_000  # the first run loads onnxruntime and measures the receptive field


def _open(viewer: ViewerModel, path) -> Image:
    for data, kwargs, kind in get_reader(str(path))(str(path)):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    return viewer.layers[-1]


def _widget(qtbot, viewer: ViewerModel, package=None) -> RunModelWidget:
    widget = RunModelWidget(viewer)
    qtbot.addWidget(widget)
    widget.device_box.setCurrentText("cpu")
    if package is not None:
        assert widget.set_package(package), widget.last_message
    return widget


def _run(qtbot, widget: RunModelWidget) -> None:
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.state != "running", timeout=RUN_TIMEOUT_MS)
    assert widget.state == "done", widget.last_message


def test_mrc_through_the_reader_then_the_membrane_model(qtbot, mrc_4nm):
    """The acceptance test: reader -> widget -> an image layer of probabilities, same shape and scale."""
    viewer = ViewerModel()
    raw = _open(viewer, mrc_4nm)
    assert tuple(raw.scale) == pytest.approx((40.0, 40.0))  # 4 nm as 40 Å, the file's voxel size
    assert [str(u) for u in raw.units] == ["angstrom", "angstrom"]

    widget = _widget(qtbot, viewer)
    assert MEMBRANE.name in [widget.zoo_box.itemText(i) for i in range(widget.zoo_box.count())]
    widget.zoo_box.setCurrentText(MEMBRANE.name)  # the zoo dropdown opens the package
    assert widget.package is not None and "dice" in widget.card_label.text()
    assert widget.input_boxes["raw"].currentText() == "crop"
    _run(qtbot, widget)

    out = viewer.layers["crop membrane_probability"]
    assert isinstance(out, Image)
    data = np.asarray(out.data)
    assert data.shape == raw.data.shape
    assert data.min() >= 0.0 and data.max() <= 1.0 and data.max() > 0.5
    assert tuple(out.scale) == pytest.approx(tuple(raw.scale))
    assert [str(u) for u in out.units] == ["angstrom", "angstrom"]
    assert not widget.warning_label.isVisibleTo(widget)  # the training data's pixel size: no warning


def test_the_counter_gives_points_and_a_table(qtbot, counter_crop):
    viewer = ViewerModel()
    viewer.add_image(counter_crop, name="particles")
    widget = _widget(qtbot, viewer, COUNTER)
    _run(qtbot, widget)
    points = viewer.layers["particles centres"]
    assert isinstance(points, Points) and len(points.data) > 0
    assert np.all(points.size > 0) and "score" in points.features
    assert isinstance(viewer.layers["particles heat"], Image)
    header = [widget.table.horizontalHeaderItem(i).text() for i in range(widget.table.columnCount())]
    assert widget.table.rowCount() == 1 and {"layer", "count", "n_centres"} <= set(header)
    assert int(widget.table.item(0, header.index("n_centres")).text()) == len(points.data)


def test_an_unlike_pixel_size_is_a_warning_in_the_widget(qtbot, tmp_path, membrane_crop):
    viewer = ViewerModel()
    _open(viewer, write_mrc(tmp_path / "fine.mrc", membrane_crop.astype(np.uint16), 2.0))  # 0.2 nm/px
    widget = _widget(qtbot, viewer, MEMBRANE)
    _run(qtbot, widget)
    assert widget.warning_label.isVisibleTo(widget)
    assert "pixel size" in widget.warning_label.text()


def test_a_volume_with_a_2d_model_runs_slice_by_slice(qtbot, membrane_crop):
    viewer = ViewerModel()
    volume = np.stack([membrane_crop[:128, :128], membrane_crop[128:, 128:]])
    viewer.add_image(volume, name="stack", scale=(50.0, 4.0, 4.0), units=("nm", "nm", "nm"))
    widget = _widget(qtbot, viewer, MEMBRANE)
    _run(qtbot, widget)
    out = viewer.layers["stack membrane_probability"]
    assert out.data.shape == volume.shape
    assert tuple(out.scale) == pytest.approx((50.0, 4.0, 4.0))
    assert "slice by slice" in widget.last_message


@pytest.mark.parametrize(
    "mistake, expected",
    [
        ("no package", "choose a model package"),
        ("no layer", "choose an image layer"),
        ("bad tile", "Tile"),
    ],
)
def test_a_user_mistake_is_one_line(qtbot, mistake, expected):
    viewer = ViewerModel()
    if mistake != "no layer":
        viewer.add_image(np.zeros((128, 128), np.float32), name="img")
    widget = _widget(qtbot, viewer, None if mistake == "no package" else MEMBRANE)
    if mistake == "bad tile":
        widget.tile_edit.setText("big")
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    assert widget.state == "failed" and widget.worker is None
    assert expected in widget.last_message and "\n" not in widget.last_message
    assert "Traceback" not in widget.status_label.text()


def test_a_wrong_package_path_is_one_line(qtbot, tmp_path):
    widget = _widget(qtbot, ViewerModel())
    widget.path_edit.setText(str(tmp_path / "nowhere.zip"))
    widget.path_edit.editingFinished.emit()
    assert widget.package is None
    assert "no such model package" in widget.last_message and "\n" not in widget.last_message


def test_cancel_stops_the_run(qtbot, membrane_crop):
    viewer = ViewerModel()
    viewer.add_image(membrane_crop, name="img")
    widget = _widget(qtbot, viewer, MEMBRANE)
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(widget.cancel_button, Qt.MouseButton.LeftButton)  # while the model loads
    qtbot.waitUntil(lambda: widget.state != "running", timeout=RUN_TIMEOUT_MS)
    assert widget.state == "cancelled" and widget.last_message == "cancelled"
    assert [layer.name for layer in viewer.layers] == ["img"]
    assert widget.run_button.isEnabled()


def test_the_layer_lists_follow_the_viewer(qtbot):
    viewer = ViewerModel()
    widget = _widget(qtbot, viewer, MEMBRANE)
    box = widget.input_boxes["raw"]
    assert box.currentText() == "(no image layer)"
    viewer.add_image(np.zeros((128, 128), np.float32), name="a")
    viewer.add_points(np.zeros((1, 2)), name="not an image")
    assert [box.itemText(i) for i in range(box.count())] == ["a"]
    viewer.layers["a"].name = "renamed"
    assert box.currentText() == "renamed"
    viewer.layers.remove("renamed")
    assert box.currentText() == "(no image layer)"
