"""The "Predict" dock widget: segment an image layer with a trained U-Net, compare with annotations."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_unet.core.predict.postprocess import PostprocessSettings, stored_tta
from napari_unet.widgets import jobs, volume
from napari_unet.widgets.cells_panel import PLANES, CellsPanel, layer_geometry
from napari_unet.widgets.common import (
    LayerCombo,
    current_plane,
    error_message,
    guarded,
    show_error,
    show_info,
    upsert_layer,
)
from napari_unet.widgets.model_choice import ModelChoice
from napari_unet.widgets.prediction_layers import (
    EditTracker,
    copy_as_annotation,
    show_comparison,
    truth_plane,
    unedited_name,
)
from napari_unet.widgets.review_panel import ReviewPanel
from napari_unet.widgets.settings_form import SettingsForm


class PredictWidget(QWidget):
    """Predict labels for an image layer and overlay them; optionally compare with annotations.

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
        self.worker = None
        self.labels_layer = None
        self.folder_panel = None
        self._connect()
        self._describe_model()
        self.cancel_button.setEnabled(False)

    def _build_controls(self, Image, Labels) -> None:
        """The controls, in the order the layout shows them."""
        napari_viewer = self.viewer
        #: the model that predicts: the Train widget's newest, a shipped one or a file
        self.models = ModelChoice(napari_viewer)
        self.image_combo = LayerCombo(napari_viewer, Image)
        self.whole_stack = QCheckBox("whole stack (all planes)")
        self.whole_stack.setToolTip(
            "A 2D model on a stack: segment every plane (plane by plane) instead of the shown "
            "one. A 3D model segments a volume as one 3D prediction.")
        self.stitch = QCheckBox("link planes into 3D objects")
        self.stitch.setToolTip(
            "A 2D model on a whole stack: give a cell cut by several planes one id (it joins "
            "the object of the plane above it overlaps best, IoU >= 0.25) instead of one per "
            "plane.")
        self.stitch.setEnabled(False)
        #: how the image will be segmented: "2D image", "3D volume", "plane by plane", …
        self.mode_label = QLabel("")
        self.mode_label.setWordWrap(True)
        self.tta = QCheckBox("test-time augmentation (2 passes: as is and turned 180°)")
        self.probabilities = QCheckBox("add probability map")
        self.contours = QCheckBox("show labels as contours")
        #: post-processing, from the same settings as the command line; reset to what the
        #: selected model stores (``metadata["postprocess"]``) whenever the model changes
        self.postprocess = SettingsForm(PostprocessSettings)
        self.compare_combo = LayerCombo(napari_viewer, Labels, none_text="(none)")
        self.compare_combo.setToolTip(
            "Annotated cells of this image: a comparison layer shows matched (green), missed "
            "(red) and extra (blue) cells, with IoU and F1 at IoU 0.5."
        )
        self.run_button, self.cancel_button = QPushButton("Predict"), QPushButton("Cancel")
        self.annotate_button = QPushButton("Use as annotation")
        self.annotate_button.setToolTip(
            "Copy the last prediction into a new labels layer to correct with napari's tools "
            "and train on (Train U-Net > Continue training); the prediction layer stays as is."
        )
        self.folder_button = QPushButton("Predict a folder…")
        self.folder_button.setToolTip(
            "Segment every image of a folder with this model into another folder: label images "
            "and cells' tables, as `napari-unet predict --measure` writes them")
        #: the cells' table of a labels layer: every prediction's, or on demand
        self.cells = CellsPanel(napari_viewer)
        #: Check these next: the least certain cells, and the one-click cell actions
        self.review = ReviewPanel(napari_viewer)
        self.edits = EditTracker()
        self.progress = QProgressBar()
        self.scores = QLabel("")
        self.scores.setWordWrap(True)

    def _build_layout(self) -> None:
        form = QFormLayout()
        form.addRow("model", self.models)
        form.addRow("image", self.image_combo)
        form.addRow("compare with", self.compare_combo)
        form.addRow("", self.mode_label)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.postprocess)
        for w in (self.whole_stack, self.stitch, self.tta, self.probabilities, self.contours):
            layout.addWidget(w)
        row = QHBoxLayout()
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        row.addWidget(self.annotate_button)
        layout.addLayout(row)
        layout.addWidget(self.progress)
        layout.addWidget(self.scores)
        layout.addWidget(self.review)
        layout.addWidget(self.cells)
        layout.addWidget(self.folder_button)
        layout.addStretch(1)

    def _connect(self) -> None:
        self.annotate_button.clicked.connect(self._on_annotate)
        self.folder_button.clicked.connect(self._on_folder)
        self.run_button.clicked.connect(self._on_run)
        self.cancel_button.clicked.connect(self.cancel)
        self.contours.toggled.connect(self._apply_contours)
        self.models.changed.connect(self._describe_model)
        self.image_combo.currentIndexChanged.connect(self._describe_mode)
        self.whole_stack.toggled.connect(self._describe_mode)

    # ------------------------------------------------------------------ model
    def _describe_model(self, *_):
        """The selected model's post-processing and test-time augmentation, and the mode."""
        try:
            _, metadata = self.models.model()
        except (ValueError, KeyError):  # none yet: the model line says so
            return
        self.postprocess.set_value(PostprocessSettings.from_metadata(metadata))
        self.tta.setChecked(stored_tta(metadata))  # what training chose the settings with
        self._describe_mode()

    def mode(self) -> str:
        """How Predict segments the chosen image with the chosen model: see
        :func:`napari_unet.widgets.volume.predict_mode` (a ValueError if it cannot)."""
        return volume.predict_mode(self.models.model()[0], self.image_combo.layer(),
                                    whole_stack=self.whole_stack.isChecked())

    def _describe_mode(self, *_):
        try:
            mode = self.mode()
            self.stitch.setEnabled(mode == "stack")
            text = volume.PREDICT_MODES[mode] + volume.scales_note(
                self.models.model()[1], self.image_combo.layer())
            if mode == "volume":
                spacing = volume.predict_spacing(self.image_combo.layer())
                text += (f", voxel spacing {spacing} from the layer scale" if spacing else
                         ", the voxel spacing stored with the model (the layer has no scale)")
            self.mode_label.setText(text)
        except (ValueError, KeyError) as exc:
            self.mode_label.setText(str(exc) if isinstance(exc, ValueError) else "")

    # ------------------------------------------------------------------ predict
    def predict(self):
        """Start predicting the chosen image in a worker; returns the worker."""
        from napari.qt.threading import create_worker

        if self.worker is not None or getattr(self.folder_panel, "worker", None) is not None:
            show_info("A prediction is already running: wait, or press Cancel.")
            return None
        model, metadata = self.models.model()
        mode = self.mode()
        layer = self.image_combo.layer()
        channel_axis = -1 if layer.rgb else None
        stack = mode == "stack"
        if mode in ("stack", "volume"):
            data, index = np.asarray(layer.data), ()
        else:
            data, index = current_plane(layer, self.viewer)
        self._describe_mode()
        self._target = (layer, index, stack)
        truth = truth_plane(self.compare_combo.layer(),
                            data.shape[:-1] if layer.rgb else data.shape, index)
        ndim = 3 if mode in ("stack", "volume") else 2
        worker = create_worker(
            jobs.iter_prediction, model, metadata, data, tta=self.tta.isChecked(), stack=stack,
            stitch=stack and self.stitch.isChecked(),
            channel_axis=channel_axis, settings=self.postprocess.value(), truth=truth,
            spacing=volume.predict_spacing(layer) if mode == "volume" else None,
            geometry=layer_geometry(layer, ndim), _start_thread=False,
        )
        worker.yielded.connect(self._on_progress)
        worker.errored.connect(lambda exc: show_error(error_message(exc)))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        worker.start()
        return worker

    def cancel(self, *_):
        if self.worker is not None:
            self.worker.quit()  # takes effect at the next tile batch
            show_info("Prediction cancelled.")

    def _on_progress(self, event):
        if isinstance(event, jobs.PredictionResult):
            self._show(event)
            return
        total = max(int(event.total) * int(getattr(event, "planes", 1) or 1), 1)
        done = int(event.done) + int(getattr(event, "plane", 0) or 0) * int(event.total)
        self.progress.setMaximum(total)
        self.progress.setValue(min(done, total))

    def _on_finished(self):
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _show(self, result):
        """Show a finished prediction (labels with their cells' table, probabilities,
        comparison) as layers."""
        layer, index, stack = self._target
        prob, labels = result.prob, result.labels
        ndim = labels.ndim
        geometry = dict(scale=layer.scale[-ndim:], translate=layer.translate[-ndim:])
        if getattr(layer, "units", None) is not None:
            geometry["units"] = tuple(layer.units)[-ndim:]
        name = unedited_name(self.viewer, f"{layer.name} prediction")
        self.edits.writing = True  # our own data change is no edit
        try:
            self.labels_layer = upsert_layer(
                self.viewer, labels, name, "labels", opacity=0.6, **geometry
            )
        finally:
            self.edits.writing = False
        self.edits.track(self.labels_layer)
        self.labels_layer.metadata[PLANES] = "plane" in result.table.columns
        self.cells.show_table(self.labels_layer, result.table, maps=result.maps)
        self.cells.image_combo.set_layer(layer)
        self.review.show_review(self.labels_layer, layer, result.review, index=index,
                                prob=(result.maps or {}).get("mean_probability"))
        self._apply_contours()
        if self.probabilities.isChecked():
            cell = prob[:, 1] if stack else prob[1]
            upsert_layer(self.viewer, cell.astype(np.float32), f"{layer.name} probability",
                         "image", colormap="viridis", contrast_limits=[0.0, 1.0],
                         blending="additive", opacity=0.6, **geometry)
        self._show_comparison(result.comparison, result.scores, geometry)

    # ------------------------------------------------------------------ annotations, comparison
    def use_as_annotation(self):
        """Copy the last prediction into a new labels layer (an annotation of that image); see
        :func:`napari_unet.widgets.prediction_layers.copy_as_annotation`. Returns the layer;
        None while a prediction runs: its labels are copied when it is there."""
        if self.worker is not None:
            show_info("Use as annotation: the prediction is running; its labels become an "
                      "annotation when it ends")
            self.worker.finished.connect(guarded(lambda *_: self.use_as_annotation()))
            return None
        pred = self.labels_layer
        if pred is None or pred not in self.viewer.layers:
            raise ValueError("Use as annotation: no prediction yet; press Predict first")
        return copy_as_annotation(self.viewer, pred, self._target[0].name)

    def _apply_contours(self, *_):
        if self.labels_layer is not None:
            self.labels_layer.contour = 2 if self.contours.isChecked() else 0

    def _show_comparison(self, comparison, scores, geometry):
        self.scores.setText(show_comparison(self.viewer, comparison, scores, geometry))
        if comparison is not None:
            self.last_scores = scores

    def open_folder_panel(self):
        """Dock the *Predict a folder* panel (once); returns it."""
        from napari_unet.widgets.predict_folder import FolderPanel

        if self.folder_panel is None:
            self.folder_panel = FolderPanel(self)
            self.viewer.window.add_dock_widget(self.folder_panel, name="Predict a folder")
        self.folder_panel.show()
        return self.folder_panel

    # ------------------------------------------------------------------ slots
    @guarded
    def _on_run(self, *_):
        self.predict()

    @guarded
    def _on_annotate(self, *_):
        self.use_as_annotation()

    @guarded
    def _on_folder(self, *_):
        self.open_folder_panel()

    def closeEvent(self, event):
        self.cancel()
        super().closeEvent(event)
