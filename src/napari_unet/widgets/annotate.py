"""The "Annotate cells" dock widget: a Labels layer to paint cells on, regions, save/load as TIFF.

The widget renders and counts; the layers it makes or chooses, and their files, come from
:mod:`napari_unet.widgets.annotation_layers`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_unet.core.metrics import count_labels
from napari_unet.widgets import volume
from napari_unet.widgets.annotation_layers import (
    background_layer,
    labels_for,
    read_labels,
    regions_layer,
    write_labels,
)
from napari_unet.widgets.common import (
    LayerCombo,
    debounce_timer,
    guarded,
    plane_index,
    show_info,
    watch_layer,
)


class AnnotateWidget(QWidget):
    """Paint a few cells on an image: each cell its own id; rectangles mark complete regions.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer, parent=None):
        from napari.layers import Image, Labels

        super().__init__(parent)
        self.viewer = napari_viewer
        self._build_controls(Image, Labels)
        self._build_layout()
        self._count_timer = debounce_timer(self, self.update_count, 200)
        self._watched = None
        self._connect()
        self._watch_labels()
        self.update_slices()

    def _build_controls(self, Image, Labels) -> None:
        napari_viewer = self.viewer
        self.image_combo = LayerCombo(napari_viewer, Image)
        self.image_combo.setToolTip("The image you annotate.")
        self.labels_combo = LayerCombo(napari_viewer, Labels, none_text="(create new)")
        self.labels_combo.setToolTip(
            "The Labels layer holding your cells: one id per cell, 0 = background. "
            "'(create new)' makes an empty one of the image's shape."
        )
        self.create_button = QPushButton("Create / attach labels layer")
        self.new_cell_button = QPushButton("New cell")
        self.new_cell_button.setToolTip("Select the next free id and switch to paint mode.")
        self.background_button = QPushButton("Background brush")
        self.background_button.setToolTip(
            "Paint pixels that are surely background (on the layer '<image> background'). "
            "Training learns from the painted cells, a band around them and these strokes; "
            "unpainted cells elsewhere are never taught as background."
        )
        self.regions_button = QPushButton("Add 'annotated regions' layer")
        self.regions_button.setToolTip(
            "Draw rectangles where every cell is annotated (the rest inside is background). "
            "With no rectangles only the painted cells, a band around them and the background "
            "strokes count."
        )
        self.mark_button = QPushButton("Mark this slice annotated")
        self.mark_button.setToolTip(
            "Volumes: every cell of the plane shown now is painted (the rest of it is "
            "background). Training counts the marked planes only (layer '<image> annotated "
            "slices'); xz / yz planes count too when the viewer shows that orientation.")
        self.unmark_button = QPushButton("Unmark")
        self.unmark_button.setToolTip("Volumes: the plane shown now no longer counts.")
        self.slices_label = QLabel("")
        self.save_button = QPushButton("Save annotations…")
        self.load_button = QPushButton("Load annotations…")
        self.count_label = QLabel("no labels layer")

    def _build_layout(self) -> None:
        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("labels", self.labels_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.create_button)
        layout.addWidget(self.new_cell_button)
        layout.addWidget(self.count_label)
        layout.addWidget(self.background_button)
        layout.addWidget(self.regions_button)
        row = QHBoxLayout()
        row.addWidget(self.mark_button, 1)
        row.addWidget(self.unmark_button)
        layout.addLayout(row)
        layout.addWidget(self.slices_label)
        row = QHBoxLayout()
        row.addWidget(self.save_button)
        row.addWidget(self.load_button)
        layout.addLayout(row)
        layout.addStretch(1)

    def _connect(self) -> None:
        napari_viewer = self.viewer
        self.create_button.clicked.connect(self._on_create)
        self.new_cell_button.clicked.connect(self._on_new_cell)
        self.regions_button.clicked.connect(self._on_regions)
        self.background_button.clicked.connect(self._on_background)
        self.mark_button.clicked.connect(self._on_mark)
        self.unmark_button.clicked.connect(self._on_unmark)
        self.image_combo.currentIndexChanged.connect(self.update_slices)
        napari_viewer.layers.events.removed.connect(self.update_slices)
        self.save_button.clicked.connect(self._on_save)
        self.load_button.clicked.connect(self._on_load)
        self.labels_combo.currentIndexChanged.connect(self._watch_labels)
        napari_viewer.dims.events.current_step.connect(self._schedule_count)

    # ------------------------------------------------------------------ labels layer
    def labels_layer(self):
        return self.labels_combo.layer()

    def create_labels(self):
        """Attach the chosen Labels layer, or add an empty one of the image's shape; returns it
        (:func:`~napari_unet.widgets.annotation_layers.labels_for`)."""
        layer = labels_for(self.viewer, self.image_combo.layer(), self.labels_layer())
        self.labels_combo.set_layer(layer)
        self._activate(layer)
        return layer

    def _activate(self, layer) -> None:
        self.viewer.layers.selection.active = layer
        self._watch_labels()

    def new_cell(self) -> int:
        """Select the next free id (largest id + 1) in paint mode; returns that id."""
        layer = self.labels_layer() or self.create_labels()
        next_id = int(np.max(layer.data)) + 1 if layer.data.size else 1
        layer.selected_label = next_id
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer
        return next_id

    def background_brush(self):
        """Select (or add) the Labels layer "<image> background", painting value 1; returns it.

        An existing layer of that name is reused when it is a Labels layer of the image's shape;
        otherwise a new layer gets a fresh name (an existing layer is never overwritten).
        """
        layer = background_layer(self.viewer, self.image_combo.layer())
        layer.selected_label = 1
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer
        return layer

    def add_regions_layer(self):
        """Add (or select) the Shapes layer "annotated regions" in rectangle mode."""
        layer = regions_layer(self.viewer, self.image_combo.layer())
        self.viewer.layers.selection.active = layer
        layer.mode = "add_rectangle"
        return layer

    # ------------------------------------------------------------------ annotated slices
    def mark_slice(self, annotated: bool = True):
        """Mark (or unmark) the plane shown now as annotated; returns (axis, index).

        The marks are the Labels layer "<image> annotated slices" (made on first use, never a
        user layer): training a volume counts the marked planes only.
        """
        image = self.image_combo.layer()
        if not volume.is_volume(image):
            raise ValueError(
                "image: annotated slices are for volumes (a Z, Y, X image layer); on a 2D "
                "image draw 'annotated regions' instead"
            )
        axis, index = volume.slicing_axis(image, self.viewer)
        layer = volume.slices_layer(self.viewer, image)
        volume.set_slice(layer, axis, index, annotated)
        self.update_slices()
        labels = self.labels_layer()
        if labels is not None and labels in self.viewer.layers:
            self.viewer.layers.selection.active = labels  # keep painting cells
        return axis, index

    def update_slices(self, *_):
        image = self.image_combo.layer()
        is_3d = volume.is_volume(image)
        for w in (self.mark_button, self.unmark_button, self.slices_label):
            w.setVisible(is_3d)
        if is_3d:
            mask = volume.slices_mask(self.viewer, image)
            n = sum(volume.count_slices(mask).values())
            self.slices_label.setText(
                f"{n} annotated slice{'s' * (n != 1)} ({volume.describe_slices(mask)})")

    # ------------------------------------------------------------------ count
    def _watch_labels(self, *_):
        layer = self.labels_layer()
        if layer is not self._watched:
            self._watched = watch_layer(self._watched, layer, self._schedule_count)
        self.update_count()

    def _schedule_count(self, *_):
        self._count_timer.start()

    def count_cells(self) -> tuple[int, int]:
        """(cells in the shown plane, cells in the whole layer)."""
        layer = self.labels_layer()
        if layer is None:
            return 0, 0
        data = np.asarray(layer.data)
        index = plane_index(layer, self.viewer)
        total = count_labels(data)
        plane = count_labels(data[index]) if index else total
        return plane, total

    def update_count(self, *_):
        layer = self.labels_layer()
        if layer is None:
            self.count_label.setText("no labels layer: press 'Create / attach'")
            return
        plane, total = self.count_cells()
        text = f"{total} annotated cell{'s' * (total != 1)}"
        if layer.data.ndim > 2:
            text += f" ({plane} on this plane)"
        self.count_label.setText(text)

    # ------------------------------------------------------------------ files
    def save(self, path, *, overwrite: bool = False) -> Path:
        """Write the labels as a TIFF; an existing file is kept unless ``overwrite=True``."""
        path = write_labels(self.labels_layer(), path, overwrite=overwrite)
        show_info(f"Saved {self.count_cells()[1]} cells to {path}")
        return path

    def load(self, path):
        """Read a labels TIFF into a NEW Labels layer (an existing layer is never overwritten)."""
        layer = read_labels(self.viewer, path, self.image_combo.layer())
        self.labels_combo.set_layer(layer)
        self._watch_labels()
        return layer

    # ------------------------------------------------------------------ slots
    @guarded
    def _on_create(self, *_):
        self.create_labels()

    @guarded
    def _on_new_cell(self, *_):
        self.new_cell()

    @guarded
    def _on_background(self, *_):
        self.background_brush()

    @guarded
    def _on_mark(self, *_):
        self.mark_slice(True)

    @guarded
    def _on_unmark(self, *_):
        self.mark_slice(False)

    @guarded
    def _on_regions(self, *_):
        self.add_regions_layer()

    @guarded
    def _on_save(self, *_):
        if self.labels_layer() is None:
            raise ValueError("labels: no labels layer to save; create one and paint some cells")
        path, _ = QFileDialog.getSaveFileName(self, "Save annotations", "", "TIFF (*.tif *.tiff)")
        if path:  # the dialog has already asked before replacing an existing file
            self.save(path, overwrite=True)

    @guarded
    def _on_load(self, *_):
        path, _ = QFileDialog.getOpenFileName(self, "Load annotations", "", "TIFF (*.tif *.tiff)")
        if path:
            self.load(path)
