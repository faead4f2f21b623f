"""*Predict a folder…*: the Predict widget's model on every image of a folder, in a worker
thread (napari stays responsive), with progress and cancel.

The work is :func:`napari_unet.commands.predict_files.iter_predict_files`, the code of
``napari-unet predict`` on files: the same outputs (``<name>_labels.tif``, with *cells' tables*
``<name>_cells.csv`` and ``summary.csv``), the same reading rules and the same refusals. Outputs
that exist are replaced only when the user says so; the summary (cells and mean size per image)
fills a table here as each image is done.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_unet.widgets.common import error_message, guarded, show_error, show_info

COLUMNS = ("image", "cells", "mean size", "labels file")


def _folder_row(edit: QLineEdit, button: QPushButton) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    row.addWidget(button)
    return row


class FolderPanel(QWidget):
    """Input and output folders, options, Start / Cancel, progress and the summary table.

    Parameters
    ----------
    predict : PredictWidget
        Whose model, post-processing and test-time augmentation choice are used.
    """

    def __init__(self, predict, parent=None):
        super().__init__(parent)
        self.predict = predict
        self.input_edit, self.output_edit = QLineEdit(), QLineEdit()
        self.input_button, self.output_button = QPushButton("Choose…"), QPushButton("Choose…")
        self.measure = QCheckBox("cells' tables (<name>_cells.csv, summary.csv)")
        self.measure.setChecked(True)
        self.pixel_size = QDoubleSpinBox()
        self.pixel_size.setDecimals(4)
        self.pixel_size.setRange(0.0, 1e6)
        self.pixel_size.setSpecialValueText("pixels")
        self.pixel_size.setToolTip("Pixel size of the images for the tables (0: in pixels)")
        self.unit = QLineEdit("µm")
        self.start_button, self.cancel_button = QPushButton("Start"), QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        form = QFormLayout()
        form.addRow("images in", _folder_row(self.input_edit, self.input_button))
        form.addRow("results to", _folder_row(self.output_edit, self.output_button))
        size = QHBoxLayout()
        size.addWidget(self.pixel_size, 1)
        size.addWidget(self.unit)
        form.addRow("pixel size", size)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.measure)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        for w in (self.progress, self.status, self.table):
            layout.addWidget(w)
        self.worker = None
        self.summary = None
        self.input_button.clicked.connect(lambda: self._choose(self.input_edit))
        self.output_button.clicked.connect(lambda: self._choose(self.output_edit))
        self.start_button.clicked.connect(self._on_start)
        self.cancel_button.clicked.connect(self.cancel)

    def ask_replace(self, existing: list[Path]) -> bool:
        """Ask before replacing earlier results (True: replace them)."""
        answer = QMessageBox.question(
            self, "Replace earlier results?",
            f"{len(existing)} of the results exist already in {existing[0].parent} (e.g. "
            f"{existing[0].name}). Replace them?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def start(self, input_dir=None, output_dir=None):
        """Predict every image of ``input_dir`` into ``output_dir`` (default: the fields) in a
        worker; returns it, or None when nothing starts (refused, or not replacing)."""
        from napari.qt.threading import create_worker

        from napari_unet.commands.pairing import expand_paths
        from napari_unet.commands.predict_files import (
            existing_outputs,
            iter_predict_files,
            plan_outputs,
        )

        if self.worker is not None or self.predict.worker is not None:
            show_info("A prediction is running: wait, or press Cancel.")
            return None
        source = Path(input_dir or self.input_edit.text().strip())
        output = Path(output_dir or self.output_edit.text().strip())
        if not str(source).strip(".") or not str(output).strip("."):
            raise ValueError("Predict a folder: choose the images' folder and a results folder")
        model, metadata = self.predict.models.model()
        paths = expand_paths(source, what="images in")
        measure = self.measure.isChecked()
        targets = plan_outputs(paths, output, measure=measure, force=True, what="results to")
        existing = existing_outputs(targets)
        if existing and not self.ask_replace(existing):
            show_info(f"Nothing replaced: {len(existing)} result file(s) exist in {output}; "
                      "choose another results folder")
            return None
        output.mkdir(parents=True, exist_ok=True)
        size = self.pixel_size.value()
        worker = create_worker(
            iter_predict_files, model, metadata, paths, targets,
            settings=self.predict.postprocess.value(), tta=self.predict.tta.isChecked(),
            pixel_size=[size] if size > 0 else None, unit=self.unit.text().strip() or "µm",
            _start_thread=False)  # fmt: skip
        worker.yielded.connect(self._on_event)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker, self.summary = worker, None
        self.table.setRowCount(0)
        self.progress.setRange(0, 1000 * len(paths))
        self.progress.setValue(0)
        self.status.setText(f"predicting {len(paths)} image(s) into {output}")
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        worker.start()
        return worker

    def cancel(self, *_):
        if self.worker is not None:
            self.worker.quit()  # takes effect at the next tile batch
            self.status.setText("cancelled: the images finished so far are written")

    def _on_event(self, event):
        from napari_unet.commands.predict_files import FileDone

        if isinstance(event, FileDone):
            self._add_row(event)
            self.progress.setValue(1000 * (event.index + 1))
            return
        ev = event.event
        done = (ev.plane * ev.total + ev.done) / max(ev.total * ev.planes, 1)
        self.progress.setValue(int(1000 * (event.index + min(done, 1.0))))

    def _add_row(self, done) -> None:
        from napari_unet.commands.predict_files import LABELS

        size = ""
        if done.table is not None and len(done.table):
            column = "area" if "area" in done.table.columns else "volume"
            unit = done.table.attrs.get("units", {}).get(column, "")
            size = f"{done.table[column].mean():.4g} {unit}"
        row = self.table.rowCount()
        self.table.insertRow(row)
        for col, text in enumerate((done.path.name, str(done.cells), size,
                                    done.outputs[LABELS].name)):
            self.table.setItem(row, col, QTableWidgetItem(text))

    def _on_returned(self, summary):
        self.summary = summary
        written = "" if summary is None else "; summary.csv written"
        self.status.setText(f"done: {self.table.rowCount()} image(s){written}")

    def _on_error(self, exc):
        text = error_message(exc)
        self.status.setText(text)
        show_error(text)

    def _on_finished(self):
        self.worker = None
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _choose(self, edit: QLineEdit) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder", edit.text())
        if folder:
            edit.setText(folder)

    @guarded
    def _on_start(self, *_):
        self.start()

    def closeEvent(self, event):
        self.cancel()
        super().closeEvent(event)
