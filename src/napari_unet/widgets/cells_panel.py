"""The cells' table of a Labels layer, part of the Predict widget: measured
(:func:`napari_unet.core.measure.measure_cells`, in a worker thread), stored as the layer's
``features`` (napari's features table widget shows it; hovering a cell shows its row) and
exported as CSV with the columns ``napari-unet predict --measure`` writes.

Every Predict result is measured with the model's confidence (the maps are kept with the
layer, so that *Measure cells* after an edit keeps the confidence columns); *Measure cells*
measures any Labels layer, with the chosen image's intensities.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFileDialog, QFormLayout, QHBoxLayout, QLabel, QPushButton, QWidget

from napari_unet.widgets.common import (
    LayerCombo,
    current_plane,
    error_message,
    guarded,
    show_error,
    show_info,
)

#: Labels layer metadata key: the layer is a stack of planes measured plane by plane
PLANES = "napari_unet_planes"


def layer_geometry(layer, ndim: int) -> dict:
    """``spacing``, ``origin`` and ``unit`` of a layer's last ``ndim`` axes, for
    :func:`~napari_unet.core.measure.measure_cells` (napari's ``pixel`` unit is ``px``)."""
    units = getattr(layer, "units", None)
    unit = "px"
    if units is not None and len(units):
        text = f"{units[-1]:~}"
        unit = "px" if text in ("pixel", "px", "") else text
    return {"spacing": tuple(float(s) for s in layer.scale[-ndim:]),
            "origin": tuple(float(t) for t in layer.translate[-ndim:]), "unit": unit}


def measure_layer_data(labels, image, *, maps=None, planes=False, geometry=None,
                       channel_axis=None):
    """The table of labels (and an image): the core's measure_cells with a layer's geometry."""
    from napari_unet.core.measure import measure_cells

    return measure_cells(labels, image, maps=maps, planes=planes, channel_axis=channel_axis,
                         **(geometry or {}))


class CellsPanel(QWidget):
    """*Measure cells* and *Export CSV…* for a Labels layer (and an image for intensities)."""

    def __init__(self, viewer, parent=None):
        from napari.layers import Image, Labels

        super().__init__(parent)
        self.viewer = viewer
        self.labels_combo = LayerCombo(viewer, Labels)
        self.image_combo = LayerCombo(viewer, Image, none_text="(no intensities)")
        self.measure_button = QPushButton("Measure cells")
        self.measure_button.setToolTip(
            "One row per cell of the labels layer (size, centroid, bounding box, shape, "
            "intensity of the image, border flag, the model's confidence for predictions) as "
            "the layer's features: napari's features table widget shows them, and the status "
            "bar shows a cell's row under the mouse.")
        self.export_button = QPushButton("Export CSV…")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("cells of", self.labels_combo)
        form.addRow("intensities", self.image_combo)
        row = QHBoxLayout()
        row.addWidget(self.measure_button)
        row.addWidget(self.export_button)
        form.addRow(row)
        form.addRow(self.status)
        self.worker = None
        #: per layer, the confidence maps of its prediction (kept for Measure cells)
        self._maps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.measure_button.clicked.connect(self._on_measure)
        self.export_button.clicked.connect(self._on_export)

    def show_table(self, layer, table, *, maps=None) -> None:
        """Store ``table`` as ``layer``'s features (and remember its confidence maps)."""
        from napari_unet.core.measure import to_features

        layer.features = to_features(table)
        if maps is not None:
            self._maps[layer] = maps
        self.labels_combo.set_layer(layer)
        size = "area" if "area" in table.columns else "volume"
        mean = float(np.mean(table[size])) if len(table) else float("nan")
        unit = table.attrs.get("units", {}).get(size, "")
        self.status.setText(f"'{layer.name}': {len(table)} cells, mean {size} {mean:.4g} {unit}"
                            " (Export CSV… or napari's features table widget)")

    def measure(self, labels_layer=None, image_layer=None):
        """Measure ``labels_layer`` (default: the chosen one) in a worker; returns the worker."""
        from napari.qt.threading import create_worker

        layer = labels_layer or self.labels_combo.layer()
        if layer is None:
            raise ValueError("cells of: no labels layer; predict, or open or paint labels first")
        image = image_layer if image_layer is not None else self.image_combo.layer()
        labels = np.asarray(layer.data)
        intensity, axis = None, None
        if image is not None:
            intensity, axis = self._image_for(image, labels)
        planes = bool(layer.metadata.get(PLANES)) and labels.ndim == 3
        maps = self._maps.get(layer)
        if maps and any(np.shape(m) != labels.shape for m in maps.values()):
            maps = None
        worker = create_worker(
            measure_layer_data, labels, intensity, maps=maps, planes=planes,
            geometry=layer_geometry(layer, labels.ndim), channel_axis=axis, _start_thread=False)
        worker.returned.connect(lambda table: self.show_table(layer, table))
        worker.errored.connect(lambda exc: show_error(error_message(exc)))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.measure_button.setEnabled(False)
        worker.start()
        return worker

    def _image_for(self, image, labels):
        """The image data of the labels' shape (the shown plane of a stack), channel axis."""
        rgb = bool(getattr(image, "rgb", False))
        data = np.asarray(image.data)
        spatial = data.shape[:-1] if rgb else data.shape
        if len(spatial) > labels.ndim:
            data, _ = current_plane(image, self.viewer)
            spatial = data.shape[:-1] if rgb else data.shape
        if tuple(spatial) != labels.shape:
            raise ValueError(
                f"intensities: '{image.name}' has shape {tuple(spatial)}, the labels "
                f"{labels.shape}; choose the image the labels belong to, or "
                "'(no intensities)'")
        return data, (-1 if rgb else None)

    def _on_finished(self):
        self.worker = None
        self.measure_button.setEnabled(True)

    def export_csv(self, path, layer=None) -> Path:
        """Write ``layer``'s (default: the chosen one) features as CSV, replacing ``path``."""
        from napari_unet.core.measure import from_features, write_csv

        layer = layer or self.labels_combo.layer()
        if layer is None or layer.features.shape[1] == 0:
            raise ValueError("Export CSV: the layer has no cells' table yet; press Measure "
                             "cells (or Predict) first")
        path = write_csv(from_features(layer.features), path, overwrite=True)
        show_info(f"{len(layer.features)} cells of '{layer.name}' -> {path}")
        return path

    @guarded
    def _on_measure(self, *_):
        self.measure()

    @guarded
    def _on_export(self, *_):
        layer = self.labels_combo.layer()
        default = f"{layer.name}_cells.csv" if layer is not None else "cells.csv"
        path, _ = QFileDialog.getSaveFileName(self, "Export the cells' table", default,
                                              "CSV (*.csv)")
        if path:
            self.export_csv(path)
