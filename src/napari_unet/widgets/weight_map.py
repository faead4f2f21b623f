"""The "Weight map" dock widget: the paper's border weights and separation borders, kept live;
for a tessellated annotation (cells that fill the space) the tissue target's weights and walls."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_unet.widgets import volume
from napari_unet.widgets.common import (
    LayerCombo,
    background_mask,
    current_plane,
    debounce_timer,
    error_message,
    guarded,
    image_name_of,
    regions_mask,
    show_error,
    upsert_layer,
    watch_layer,
)

WEIGHT_LAYER = "weight map"
BORDER_LAYER = "separation borders"
WALL_LAYER = "walls"
IGNORED_LAYER = "not counted (weight 0)"
#: the Target box's choices, as the Train widget's target setting
TARGETS = ("auto", "objects", "tissue")


class WeightView(NamedTuple):
    """What the widget shows: the weights, the separation target (the borders that become
    background between touching objects, or a tissue's walls), the voxels that do not count,
    the kind of target (``"objects"`` or ``"tissue"``) and why it is that kind."""

    weights: np.ndarray
    borders: np.ndarray
    ignored: np.ndarray
    target: str
    reason: str


def compute_weight_map(labels, *, w0, sigma, class_balance, num_classes, annotated,
                       background=None, sparse=True, spacing=None, target="auto",
                       recognise_on=None) -> WeightView:
    """Weight map, separation target and the not-counted mask of a plane or a volume (in a
    worker): those training uses (:func:`napari_unet.core.training.data.training_target`:
    the counted area of the GUI's sparse rule; labels outside it shape neither the borders nor
    the weights); a volume's distances are in the units of ``spacing`` (Z, Y, X), as ``sigma``.

    ``target`` "auto" recognises the kind as training does
    (:func:`napari_unet.core.targets.recognise_target` on the counted area): a tessellated
    annotation shows the tissue target (3 classes: background, cell, wall; ``num_classes`` is
    then ignored) and its walls, every cell voxel staying a cell. ``recognise_on``: the
    (labels, annotated) the kind is recognised on instead, e.g. the annotated slices of the
    volume a shown plane belongs to (a plane between them holds no annotation).
    """
    from napari_unet.core.targets import counted_area, recognise_target, to_instances
    from napari_unet.core.targets.target import separation_borders
    from napari_unet.core.training.data import training_target

    reason = "chosen"
    if target == "auto":
        if recognise_on is None:
            inst = to_instances(labels)
            recognise_on = (inst, counted_area(inst, annotated=annotated, background=background,
                                               sparse=sparse))
        target, share = recognise_target([recognise_on])
        reason = f"{100 * share:.0f} % of the painted cells' outline touches another cell"
    tissue = target == "tissue"
    taught = training_target(labels, annotated=annotated, background=background, sparse=sparse,
                             num_classes=3 if tissue else num_classes, w0=w0, sigma=sigma,
                             spacing=spacing, class_balance=class_balance, tissue=tissue)
    # the tissue's walls are the separation borders kept as cells (class 2 of its target)
    borders = separation_borders(taught.instances)
    return WeightView(taught.weights, borders.astype(np.uint8), ~taught.counted, target, reason)


class WeightMapWidget(QWidget):
    """Show the weight map the U-Net is trained with, recomputed as you paint or change settings.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer, parent=None):
        from napari.layers import Labels

        super().__init__(parent)
        self.viewer = napari_viewer
        self.labels_combo = LayerCombo(napari_viewer, Labels)
        self.labels_combo.setToolTip("Cells to weight: instance ids or a binary mask.")
        self.w0 = QDoubleSpinBox(minimum=0.0, maximum=100.0, value=10.0, singleStep=1.0)
        self.w0.setToolTip("w0: height of the border term (paper: 10).")
        self.sigma = QDoubleSpinBox(minimum=0.5, maximum=50.0, value=5.0, singleStep=0.5)
        self.sigma.setToolTip("σ: width of the border term in pixels (paper: about 5).")
        self.balance = QCheckBox("class balance")
        self.balance.setChecked(True)
        self.balance.setToolTip("Weight each class by its inverse frequency (w_c of the paper).")
        self.classes = QComboBox()
        self.classes.addItems(["2 (background, cell)", "3 (background, interior, border)"])
        self.classes.setToolTip("Objects: 2 classes, the paper's target; 3: borders as a class "
                                "of their own. A tissue's target has 3 (background, cell, wall).")
        self.target = QComboBox()
        self.target.addItems(TARGETS)
        self.target.setToolTip(
            "What the cells are, as Train's target: auto recognises cells that fill the space "
            "(a tissue: at least half of the painted cells' outline touches another cell) and "
            "shows the tissue target, the walls between cells as its separation target; "
            "objects: cells on a background, separated by background borders (the paper's).")
        self.complete = QCheckBox("labels are complete")
        self.complete.setToolTip(
            "Off (as Train's default): only painted cells, a band around them (or the "
            "'annotated regions') and Background brush strokes count. On: everything counts.")
        self.volume = QCheckBox("whole volume (3D, spacing from the layer scale; slower)")
        self.volume.setToolTip(
            "Volumes: the weights of the 3D training, on every voxel, with distances in the "
            "layer's scale units (σ too); counted: the slices marked in Annotate cells. Off: "
            "the plane shown now (fast).")
        self.live = QCheckBox("recompute while painting")
        self.live.setChecked(True)
        self.compute_button = QPushButton("Compute weight map")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self._build_layout()
        self._timer = debounce_timer(self, self._start, 300)
        self._worker = None
        self._dirty = False
        self._watched = None
        self.weight_layer = None
        self.border_layer = None
        self.ignored_layer = None
        self._connect()
        self._watch_labels()

    def _build_layout(self) -> None:
        form = QFormLayout()
        form.addRow("labels", self.labels_combo)
        form.addRow("w0", self.w0)
        form.addRow("σ (px)", self.sigma)
        form.addRow("target", self.target)
        form.addRow("classes", self.classes)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.balance)
        layout.addWidget(self.complete)
        layout.addWidget(self.volume)
        layout.addWidget(self.live)
        layout.addWidget(self.compute_button)
        layout.addWidget(self.status)
        layout.addStretch(1)

    def _connect(self) -> None:
        self.compute_button.clicked.connect(self._on_compute)
        for box in (self.w0, self.sigma):
            box.valueChanged.connect(self._changed)
        self.balance.toggled.connect(self._changed)
        self.complete.toggled.connect(self._changed)
        self.volume.toggled.connect(self._changed)
        self.classes.currentIndexChanged.connect(self._changed)
        self.target.currentIndexChanged.connect(self._changed)
        self.labels_combo.currentIndexChanged.connect(self._watch_labels)
        self.viewer.dims.events.current_step.connect(self._plane_changed)

    # ------------------------------------------------------------------ triggers
    def _watch_labels(self, *_):
        layer = self.labels_combo.layer()
        if layer is self._watched:
            return
        self._watched = watch_layer(self._watched, layer, self._painted)
        self._changed()

    def _changed(self, *_):
        """A parameter or the plane changed: recompute after a quiet 300 ms."""
        if self.labels_combo.layer() is not None:
            self._timer.start()

    def _plane_changed(self, *_):
        if not self.volume.isChecked():  # the whole volume does not change with the plane
            self._changed()

    def _painted(self, *_):
        if self.live.isChecked():
            self._timer.start()

    @guarded
    def _on_compute(self, *_):
        self.compute()

    def _start(self):
        if self.labels_combo.layer() is None:  # removed meanwhile: nothing to recompute
            return
        try:
            self.compute()
        except Exception as exc:  # from a timer: report, never raise into Qt
            show_error(error_message(exc))

    # ------------------------------------------------------------------ compute
    def settings(self) -> dict:
        return dict(
            w0=float(self.w0.value()),
            sigma=float(self.sigma.value()),
            class_balance=self.balance.isChecked(),
            num_classes=2 + self.classes.currentIndex(),
            target=self.target.currentText(),
        )

    def compute(self):
        """Start computing the weight map of the shown plane in a worker; returns the worker."""
        from napari.qt.threading import create_worker

        layer = self.labels_combo.layer()
        if layer is None:
            raise ValueError("labels: choose a labels layer (Annotate cells > Create) first")
        if self._worker is not None:
            self._dirty = True  # one more pass when the running one finishes
            return self._worker
        if self.volume.isChecked() and layer.data.ndim == 3:
            data, index, extra = self._volume_inputs(layer)
        else:
            data, index = current_plane(layer, self.viewer)
            extra = dict(
                annotated=regions_mask(self.viewer, data.shape[-2:], index),
                background=background_mask(self.viewer, image_name_of(layer), data.shape[-2:],
                                           index),
                sparse=not self.complete.isChecked())
            slices = self._slices(layer)
            if slices is not None and not self.complete.isChecked():  # the volume's rule
                extra.update(annotated=slices[index], sparse=False,
                             recognise_on=(np.asarray(layer.data), slices))
        self._index = index
        self._layer = layer
        worker = create_worker(
            compute_weight_map, np.array(data, copy=True), **extra, **self.settings(),
            _start_thread=False,
        )
        worker.returned.connect(self._show)
        worker.errored.connect(lambda exc: show_error(error_message(exc)))
        worker.finished.connect(self._finished)
        self._worker = worker
        self.status.setText("computing…")
        worker.start()
        return worker

    def _slices(self, layer):
        """The annotated slices of the volume ``layer`` annotates (Annotate cells), or None."""
        if layer.data.ndim != 3:
            return None
        name = image_name_of(layer)
        image = self.viewer.layers[name] if name in self.viewer.layers else layer
        return volume.slices_mask(self.viewer, image)

    def _volume_inputs(self, layer):
        """The whole volume, its annotated slices (or everything: complete) and spacing."""
        spacing = tuple(float(v) for v in layer.scale[-3:])
        annotated = None if self.complete.isChecked() else self._slices(layer)
        if annotated is None and not self.complete.isChecked():
            raise ValueError(
                "annotated slices: none marked on this volume; mark them in Annotate cells, "
                "tick 'labels are complete', or untick 'whole volume'")
        return np.asarray(layer.data), ("volume",), dict(annotated=annotated, sparse=False,
                                                          spacing=spacing)

    def _finished(self):
        self._worker = None
        if self._dirty:
            self._dirty = False
            self._timer.start()

    def _show(self, result: WeightView):
        weights, borders, ignored, target = result[:4]
        layer = self._layer
        scale = layer.scale[-weights.ndim :]
        translate = layer.translate[-weights.ndim :]
        top = float(np.percentile(weights, 99.9)) if weights.size else 1.0
        self.weight_layer = upsert_layer(
            self.viewer, weights, WEIGHT_LAYER, "image", colormap="magma",
            contrast_limits=[0.0, max(top, 1e-3)], blending="additive", opacity=0.8,
            scale=scale, translate=translate,
        )
        name, other = ((WALL_LAYER, BORDER_LAYER) if target == "tissue" else
                       (BORDER_LAYER, WALL_LAYER))
        if other in self.viewer.layers and self.viewer.layers[other].metadata.get(
                "napari_unet") == other:  # ours, of the other kind of target: replaced
            self.viewer.layers.remove(other)
        self.border_layer = upsert_layer(
            self.viewer, borders, name, "labels", opacity=0.9, scale=scale, translate=translate,
        )
        # weight 0 (not counted in training): a gray veil added on top, distinct from low weights
        self.ignored_layer = upsert_layer(
            self.viewer, ignored.astype(np.uint8), IGNORED_LAYER, "image", colormap="gray",
            contrast_limits=[0.0, 2.5], blending="additive", opacity=1.0,
            scale=scale, translate=translate,
        )
        where = (" (whole volume)" if self._index == ("volume",) else
                 f" (plane {self._index})" if self._index else "")
        counted = int(ignored.size - np.count_nonzero(ignored))
        px = "voxels" if weights.ndim == 3 else "pixels"
        kind = ("tissue target (cells fill the space; the walls between cells are the "
                f"separation target, every cell {px[:-1]} stays a cell: {result.reason}): "
                if target == "tissue" else "")
        self.status.setText(
            f"{kind}weights {float(weights.min()):.2f}–{float(weights.max()):.2f}{where}; "
            f"{int(borders.sum())} {'wall' if target == 'tissue' else 'border'} {px}; "
            f"{counted} of {ignored.size} {px} count (gray veil: weight 0, not counted)"
        )
