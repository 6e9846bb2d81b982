"""The "Run model" dock widget: choose a package, read its card, pick the input layer(s), run it in a
worker thread (progress bar, cancel) and get its outputs as layers. A thin Qt shell over
:mod:`emzoo.napari_plugin.engine`; it uses only the layers API that ``napari.Viewer`` and
``napari.components.ViewerModel`` share, so it runs headless too.

User mistakes and failed runs are one line in the widget (and a napari notification), never a
traceback dialog.
"""

from __future__ import annotations

import logging
import threading
import time
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.layers import Image as ImageLayer
from napari.layers import Labels as LabelsLayer
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from emzoo.errors import UsageError
from emzoo.napari_plugin import engine
from emzoo.napari_plugin.card import Card, open_card, zoo_models
from emzoo.napari_plugin.layers import image_from_layer, layer_array, layer_attributes

if TYPE_CHECKING:
    from napari.components import ViewerModel

    from emzoo.package.load import ModelPackage
    from emzoo.runtime.predictor import Predictor

log = logging.getLogger(__name__)
CHOOSE = "(a zoo model)"
NO_LAYER = "(no image layer)"
DEVICES = ("auto", "cpu", "cuda")


class _Signals(QObject):
    """Progress from the worker thread, delivered on the GUI thread."""

    progressed = Signal(int, int)


class RunModelWidget(QWidget):
    """Run an emzoo / bioimage.io package on the viewer's layers."""

    def __init__(self, napari_viewer: ViewerModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.package: ModelPackage | None = None
        self.card: Card | None = None
        self.state = "idle"  # idle, running, done, failed, cancelled
        self.last_message = ""
        self.worker: Any = None
        self._cancel = threading.Event()
        self._predictors: dict[tuple, Predictor] = {}
        self._signals = _Signals()
        self._signals.progressed.connect(self._on_progress)
        self._zoo = zoo_models()
        self._build()
        self.viewer.layers.events.inserted.connect(self._on_inserted)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        self.viewer.layers.events.changed.connect(self.refresh_layers)

    # -- layout ------------------------------------------------------------------------------

    def _build(self) -> None:
        self.zoo_box = QComboBox()
        self.zoo_box.addItems([CHOOSE, *self._zoo])
        self.zoo_box.setEnabled(bool(self._zoo))
        self.zoo_box.currentTextChanged.connect(self._on_zoo)
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("model .zip, folder or rdf.yaml")
        self.path_edit.editingFinished.connect(lambda: self.set_package(self.path_edit.text()))
        self.file_button = QPushButton("Zip…")
        self.file_button.clicked.connect(self._browse_file)
        self.folder_button = QPushButton("Folder…")
        self.folder_button.clicked.connect(self._browse_folder)
        path_row = QHBoxLayout()
        for w in (self.path_edit, self.file_button, self.folder_button):
            path_row.addWidget(w)
        self.card_label = QLabel("no package chosen")
        self.card_label.setWordWrap(True)
        self.inputs_form = QFormLayout()
        self.input_boxes: dict[str, QComboBox] = {}
        self.device_box = QComboBox()
        self.device_box.addItems(DEVICES)
        self.tile_edit = QLineEdit()
        self.tile_edit.setPlaceholderText("auto (e.g. 512 or 512,512)")
        options = QFormLayout()
        options.addRow("Device", self.device_box)
        options.addRow("Tile", self.tile_edit)
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.warning_label = QLabel("")
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet("color: orange")
        self.warning_label.setVisible(False)
        self.table = QTableWidget(0, 0)
        self.table.setVisible(False)

        layout = QVBoxLayout(self)
        form = QFormLayout()
        form.addRow("Zoo model", self.zoo_box)
        form.addRow("Package", path_row)
        layout.addLayout(form)
        layout.addWidget(self.card_label)
        layout.addLayout(self.inputs_form)
        layout.addLayout(options)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addWidget(self.warning_label)
        layout.addWidget(self.table)
        layout.addStretch(1)
        self._set_inputs(["input"])

    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Model package", "", "bioimage.io packages (*.zip *.yaml);;All files (*)"
        )
        if path:
            self.set_package(path)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model package folder")
        if path:
            self.set_package(path)

    def _on_zoo(self, name: str) -> None:
        if name in self._zoo:
            self.set_package(str(self._zoo[name]))

    # -- the package -------------------------------------------------------------------------

    def set_package(self, source: str | Path) -> bool:
        """Open the package at ``source`` and show its card; False (and one line) when it cannot."""
        source = str(source).strip()
        if self.path_edit.text() != source:
            self.path_edit.setText(source)
        if not source:
            return False
        try:
            self.package, self.card = open_card(source)
        except Exception as e:  # emzoo's one-line errors; anything else as one line too
            self.package = self.card = None
            self.card_label.setText("no package chosen")
            self._set_inputs(["input"])
            self._report(e)
            return False
        self._show_card(self.card)
        self._set_inputs([t.id for t in self.package.spec.inputs])
        self._set_status("")
        return True

    def _show_card(self, card: Card) -> None:
        lines = card.lines()
        html = f"<b>{escape(lines[0])}</b><br>" + "<br>".join(escape(line) for line in lines[1:])
        self.card_label.setText(html.replace("  ", "&nbsp;&nbsp;"))

    def _set_inputs(self, ids: list[str]) -> None:
        while self.inputs_form.rowCount():
            self.inputs_form.removeRow(0)
        self.input_boxes = {}
        for tid in ids:
            box = QComboBox()
            self.input_boxes[tid] = box
            self.inputs_form.addRow(f"Layer ({tid})" if len(ids) > 1 else "Layer", box)
        self.refresh_layers()

    def _on_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh_layers)  # a renamed layer keeps its place
        self.refresh_layers()

    def _image_layers(self) -> list[Any]:
        return [layer for layer in self.viewer.layers if isinstance(layer, ImageLayer | LabelsLayer)]

    def refresh_layers(self, *_: Any) -> None:
        """List the viewer's image (and labels) layers in each input box, keeping the choice."""
        names = [layer.name for layer in self._image_layers()]
        for box in self.input_boxes.values():
            current = box.currentText()
            box.blockSignals(True)
            box.clear()
            box.addItems(names or [NO_LAYER])
            if current in names:
                box.setCurrentText(current)
            box.blockSignals(False)

    # -- running -----------------------------------------------------------------------------

    def _chosen(self) -> dict[str, Any]:
        """The layer chosen for each model input; UsageError for a missing choice."""
        if self.package is None:
            raise UsageError("choose a model package first (a zoo model, a .zip or a folder)")
        by_name = {layer.name: layer for layer in self._image_layers()}
        chosen = {}
        for tid, box in self.input_boxes.items():
            name = box.currentText()
            if name not in by_name:
                raise UsageError(f"choose an image layer for the input {tid!r} (open an image first)")
            chosen[tid] = by_name[name]
        return chosen

    def run(self) -> None:
        """Start the run in a worker thread (one at a time)."""
        if self.state == "running":
            return
        try:
            layers = self._chosen()
            tile = engine.parse_tile(self.tile_edit.text())
            images = {
                tid: image_from_layer(layer_array(lay), layer_attributes(lay)) for tid, lay in layers.items()
            }
        except Exception as e:
            self.state = "failed"
            self._report(e)
            return
        first = layers[self.package.spec.inputs[0].id]
        reference = engine.Reference.of(
            first.name, images[self.package.spec.inputs[0].id], layer_attributes(first)
        )
        names = {tid: layer.name for tid, layer in layers.items()}
        self._cancel.clear()
        self.state = "running"
        self.warning_label.setVisible(False)
        self.progress.setRange(0, 0)  # busy until the first tile is done
        self._set_status(f"running {self.package.spec.name} on {first.name}…")
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        key = (str(self.package.root), self.device_box.currentText(), tile)
        self.worker = create_worker(
            self._work, self.package, key, images, names, _start_thread=False, _ignore_errors=True
        )
        self.worker.returned.connect(lambda result: self._done(result, reference))
        self.worker.errored.connect(self._failed)
        self.worker.start()

    def _work(
        self, package: ModelPackage, key: tuple, images: dict, names: dict
    ) -> tuple[engine.Prediction, Any, float]:
        """In the worker thread: load the model (once per package, device and tile) and predict."""
        start = time.perf_counter()
        predictor = self._predictors.get(key)
        if predictor is None:
            _, device, tile = key
            predictor = engine.load_predictor(package, device=device, tile=tile)
            self._predictors = {key: predictor}  # one model in memory at a time
        prediction = engine.predict_images(
            predictor,
            images,
            names=names,
            progress=self._signals.progressed.emit,
            cancelled=self._cancel.is_set,
        )
        return prediction, predictor.spec, time.perf_counter() - start

    def cancel(self) -> None:
        """Ask the running worker to stop after the current batch of tiles."""
        if self.state == "running":
            self._cancel.set()
            self._set_status("cancelling…")

    def _on_progress(self, done: int, total: int) -> None:
        if self.state == "running" and total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)

    def _done(self, result: tuple[engine.Prediction, Any, float], reference: engine.Reference) -> None:
        prediction, spec, seconds = result
        try:
            layers, rows = engine.output_layers(prediction, spec, reference)
            for data, kwargs, kind in layers:
                getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        except Exception as e:
            self._finish("failed")
            self._report(e)
            return
        self._show_table(rows)
        if prediction.warnings:
            self.warning_label.setText("⚠ " + "\n⚠ ".join(prediction.warnings))
            self.warning_label.setVisible(True)
            for warning in prediction.warnings:
                show_warning(f"{reference.name}: {warning}")
        self._finish("done")
        how = " (slice by slice)" if prediction.slices else ""
        self._set_status(f"done{how}: {len(layers)} layer(s) in {seconds:.1f} s")

    def _failed(self, error: BaseException) -> None:
        if isinstance(error, engine.Cancelled):
            self._finish("cancelled")
            self._set_status("cancelled")
            show_info("emzoo: run cancelled")
            return
        if not isinstance(error, UsageError):
            log.info("the run failed", exc_info=error)
        self._finish("failed")
        self._report(error)

    def _finish(self, state: str) -> None:
        self.state = state
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if state == "done" else 0)
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _show_table(self, rows: list[dict]) -> None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        self.table.clear()
        self.table.setRowCount(len(rows))
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        for i, row in enumerate(rows):
            for j, column in enumerate(columns):
                self.table.setItem(i, j, QTableWidgetItem(str(row.get(column, ""))))
        self.table.setVisible(bool(rows))

    # -- messages ----------------------------------------------------------------------------

    def _set_status(self, text: str, *, error: bool = False) -> None:
        self.last_message = text
        self.status_label.setText(text)
        self.status_label.setStyleSheet("color: red" if error else "")

    def _report(self, error: BaseException) -> None:
        """One line in the widget and a napari notification, no traceback."""
        text = engine.message(error)
        self._set_status(text, error=True)
        show_error(f"emzoo: {text}")
