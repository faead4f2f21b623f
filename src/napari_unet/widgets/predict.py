"""The "Predict" dock widget: segment an image layer with a trained U-Net, compare with annotations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
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
from napari_unet.widgets.common import (
    LayerCombo,
    current_plane,
    error_message,
    guarded,
    shared_models,
    show_error,
    show_info,
    upsert_layer,
)
from napari_unet.widgets.settings_form import SettingsForm

TRAINED = "model just trained (Train U-Net)"
#: layer metadata key set when the user edits a layer this widget wrote (it is then never rewritten)
EDITED = "napari_unet_edited"
SHIPPED = " (shipped)"
#: data key prefix of the shipped models' entries in the source list
SHIPPED_KEY = "shipped:"
COMPARE_COLORS = {0: "transparent", 1: "#30c030", 2: "#ff3030", 3: "#3080ff", None: "transparent"}


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
        self.registry = shared_models(napari_viewer)
        self.source = QComboBox()
        self.source.addItem(TRAINED)
        from napari_unet.models import model_names

        for n in model_names():  # napari_unet.models
            self.source.addItem(f"{n}{SHIPPED}", f"{SHIPPED_KEY}{n}")
        self.source.setToolTip("The model the Train U-Net widget published last, or a file.")
        self.load_button = QPushButton("Load model…")
        self.model_label = QLabel("no model yet: train one or load a .safetensors file")
        self.model_label.setWordWrap(True)
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
        self.tta = QCheckBox("test-time augmentation (8 flips/rotations, slower)")
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
        self.progress = QProgressBar()
        self.scores = QLabel("")
        self.scores.setWordWrap(True)

        form = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(self.source, 1)
        row.addWidget(self.load_button)
        form.addRow("model", row)
        form.addRow("", self.model_label)
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
        layout.addStretch(1)

        self.worker = None
        self.labels_layer = None
        self._loaded: dict = {}
        self.load_button.clicked.connect(self._on_load)
        self.annotate_button.clicked.connect(self._on_annotate)
        self.run_button.clicked.connect(self._on_run)
        self.cancel_button.clicked.connect(self.cancel)
        self.contours.toggled.connect(self._apply_contours)
        self.source.currentIndexChanged.connect(self._describe_model)
        self.image_combo.currentIndexChanged.connect(self._describe_mode)
        self.whole_stack.toggled.connect(self._describe_mode)
        self.registry.changed.connect(self._on_new_model)
        self._describe_model()
        self.cancel_button.setEnabled(False)

    # ------------------------------------------------------------------ model
    def load_model(self, path):
        """Load a model file; it becomes the selected model. Files are told apart by full path."""
        from napari_unet.core.io.model_file import load_model

        path = Path(path).expanduser().resolve()
        model, metadata = load_model(path)
        key = str(path)
        self._loaded[key] = (model, metadata)
        index = self.source.findData(key)
        if index < 0:
            self.source.addItem(f"{path.name} ({path.parent})", key)
            index = self.source.count() - 1
        self.source.setCurrentIndex(index)
        self._describe_model()
        return model, metadata

    def model(self):
        """(model, metadata) of the selected source; a ValueError with the fix if there is none."""
        key = self.source.currentData()
        if key is None:  # the model of the Train widget (or a reloaded run): the newest
            if self.registry.model is None:
                raise ValueError(
                    "model: nothing trained yet in this viewer; train with 'Train U-Net' or "
                    "press 'Load model…'"
                )
            return self.registry.model, self.registry.metadata
        if key.startswith(SHIPPED_KEY) and key not in self._loaded:
            from napari_unet.core.io.model_file import load_model
            from napari_unet.models import model_path

            try:
                self._loaded[key] = load_model(model_path(key[len(SHIPPED_KEY) :]))
            except FileNotFoundError as err:
                raise ValueError(err.args[0]) from None
        return self._loaded[key]

    def _on_new_model(self, *_):
        """A new training finished (or a run was reloaded): predict with it from now on."""
        self.source.setCurrentIndex(0)
        self._describe_model()

    def _describe_model(self, *_):
        try:
            model, metadata = self.model()
        except (ValueError, KeyError):
            self.model_label.setText("no model yet: train one or load a .safetensors file")
            return
        self.postprocess.set_value(PostprocessSettings.from_metadata(metadata))
        self.tta.setChecked(stored_tta(metadata))  # what training chose the settings with
        cfg = getattr(model, "config", {})
        self.model_label.setText(
            f"{getattr(model, 'ndim', 2)}D U-Net, depth {cfg.get('depth')}, base "
            f"{cfg.get('base_channels')}, {cfg.get('num_classes')} classes"
        )
        self._describe_mode()

    def mode(self) -> str:
        """How Predict segments the chosen image with the chosen model: see
        :func:`napari_unet.widgets.volume.predict_mode` (a ValueError if it cannot)."""
        return volume.predict_mode(self.model()[0], self.image_combo.layer(),
                                    whole_stack=self.whole_stack.isChecked())

    def _describe_mode(self, *_):
        try:
            mode = self.mode()
            self.stitch.setEnabled(mode == "stack")
            text = volume.PREDICT_MODES[mode]
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

        if self.worker is not None:
            show_info("A prediction is already running: wait, or press Cancel.")
            return None
        model, metadata = self.model()
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
        truth = self._truth(data.shape[:-1] if layer.rgb else data.shape, index)
        worker = create_worker(
            jobs.iter_prediction, model, metadata, data, tta=self.tta.isChecked(), stack=stack,
            stitch=stack and self.stitch.isChecked(),
            channel_axis=channel_axis, settings=self.postprocess.value(), truth=truth,
            spacing=volume.predict_spacing(layer) if mode == "volume" else None,
            _start_thread=False,
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
        """Show a finished prediction (labels, probabilities, comparison) as layers."""
        layer, _, stack = self._target
        prob, labels = result.prob, result.labels
        ndim = labels.ndim
        geometry = dict(scale=layer.scale[-ndim:], translate=layer.translate[-ndim:])
        name = self._unedited_name(f"{layer.name} prediction")
        self._writing = True  # our own data change is no edit
        try:
            self.labels_layer = upsert_layer(
                self.viewer, labels, name, "labels", opacity=0.6, **geometry
            )
        finally:
            self._writing = False
        self._track_edits(self.labels_layer)
        self._apply_contours()
        if self.probabilities.isChecked():
            cell = prob[:, 1] if stack else prob[1]
            upsert_layer(self.viewer, cell.astype(np.float32), f"{layer.name} probability",
                         "image", colormap="viridis", contrast_limits=[0.0, 1.0],
                         blending="additive", opacity=0.6, **geometry)
        self._show_comparison(result.comparison, result.scores, geometry)

    # ------------------------------------------------------------------ edits and annotations
    def _unedited_name(self, base: str) -> str:
        """``base``, or ``base (2)``, … : the first name whose layer the user has not edited."""
        name, n = base, 1
        while name in self.viewer.layers and self.viewer.layers[name].metadata.get(EDITED):
            n += 1
            name = f"{base} ({n})"
        return name

    def _track_edits(self, layer) -> None:
        if getattr(layer, "_napari_unet_tracked", False):
            return
        layer._napari_unet_tracked = True
        layer.events.paint.connect(self._on_layer_edit)
        layer.events.data.connect(self._on_layer_edit)

    def _on_layer_edit(self, event):
        if not getattr(self, "_writing", False):
            event.source.metadata[EDITED] = True

    def use_as_annotation(self):
        """Copy the last prediction into a new labels layer (an annotation of that image).

        The copy is a new layer (``<image> annotation``, numbered if taken): neither the
        prediction layer nor an existing annotation is ever overwritten. Returns the layer.
        """
        pred = self.labels_layer
        if pred is None or pred not in self.viewer.layers:
            raise ValueError("Use as annotation: no prediction yet; press Predict first")
        image = self._target[0].name
        base = name = f"{image} annotation"
        n = 1
        while name in self.viewer.layers:
            n += 1
            name = f"{base} ({n})"
        layer = self.viewer.add_labels(
            np.array(pred.data, copy=True), name=name, scale=pred.scale, translate=pred.translate,
            metadata={"napari_unet_annotation_of": image},
        )
        show_info(f"'{name}': correct it with the labels tools, then Train U-Net > Continue "
                  "training")
        return layer

    def _apply_contours(self, *_):
        if self.labels_layer is not None:
            self.labels_layer.contour = 2 if self.contours.isChecked() else 0

    def _truth(self, shape, index=()):
        """The annotated cells chosen in 'compare with' at the predicted plane(s), or None."""
        truth_layer = self.compare_combo.layer()
        if truth_layer is None:
            return None
        truth = np.asarray(truth_layer.data)
        if index and truth.ndim > len(shape):
            truth = truth[index]
        if truth.shape != tuple(shape):
            raise ValueError(
                f"compare with: '{truth_layer.name}' has shape {truth.shape}, the prediction "
                f"{tuple(shape)}; choose the annotations of the predicted image or '(none)'"
            )
        return truth

    def _show_comparison(self, comparison, scores, geometry):
        if comparison is None:
            self.scores.setText("")
            return None
        upsert_layer(
            self.viewer, comparison, "comparison (matched/missed/extra)", "labels",
            colormap=COMPARE_COLORS, opacity=0.7, **geometry,
        )
        self.last_scores = scores
        self.scores.setText(
            f"IoU {scores['iou']:.3f} · F1@0.5 {scores['f1']:.3f} — matched {scores['tp']} "
            f"(green), missed {scores['fn']} (red), extra {scores['fp']} (blue)"
        )
        return scores

    # ------------------------------------------------------------------ slots
    @guarded
    def _on_run(self, *_):
        self.predict()

    @guarded
    def _on_annotate(self, *_):
        self.use_as_annotation()

    @guarded
    def _on_load(self, *_):
        path, _ = QFileDialog.getOpenFileName(self, "Load model", "", "Model (*.safetensors)")
        if path:
            self.load_model(path)

    def closeEvent(self, event):
        self.cancel()
        super().closeEvent(event)
