"""The model part of the "Predict" widget: which model predicts (the Train widget's newest, a
shipped one, or a file), *Load model…*, and a line that describes it."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_unet.widgets.common import guarded, shared_models

TRAINED = "model just trained (Train U-Net)"
SHIPPED = " (shipped)"
#: data key prefix of the shipped models' entries in the source list
SHIPPED_KEY = "shipped:"
NO_MODEL = "no model yet: train one or load a .safetensors file"


class ModelChoice(QWidget):
    """The model list (``source``), *Load model…* and the description (``label``).

    ``changed`` is emitted whenever the selected model changes (a choice in the list, a loaded
    file, a new training published by the Train widget). Files are told apart by full path.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    changed = Signal()

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        from napari_unet.models import model_names

        self.registry = shared_models(napari_viewer)
        self.source = QComboBox()
        self.source.addItem(TRAINED)
        for n in model_names():  # napari_unet.models
            self.source.addItem(f"{n}{SHIPPED}", f"{SHIPPED_KEY}{n}")
        self.source.setToolTip("The model the Train U-Net widget published last, or a file.")
        self.load_button = QPushButton("Load model…")
        self.label = QLabel(NO_MODEL)
        self.label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(self.source, 1)
        row.addWidget(self.load_button)
        layout.addLayout(row)
        layout.addWidget(self.label)
        self._loaded: dict = {}
        self.load_button.clicked.connect(self._on_load)
        self.source.currentIndexChanged.connect(self._on_change)
        self.registry.changed.connect(self._on_new_model)
        self.describe()

    def load_model(self, path):
        """Load a model file; it becomes the selected model. Returns (model, metadata)."""
        from napari_unet.core.io.model_file import load_model

        path = Path(path).expanduser().resolve()
        model, metadata = load_model(path)
        key = str(path)
        self._loaded[key] = (model, metadata)
        index = self.source.findData(key)
        if index < 0:
            self.source.addItem(f"{path.name} ({path.parent})", key)
            index = self.source.count() - 1
        if index == self.source.currentIndex():
            self._on_change()  # the same file read again: its new content
        else:
            self.source.setCurrentIndex(index)
        return model, metadata

    def model(self):
        """(model, metadata) of the selected source; a ValueError with the fix if there is none."""
        key = self.source.currentData()
        if key is None:  # the model of the Train widget (or a reloaded run): the newest
            self.registry.wait_for_model()  # a training that just ended: its model, not none
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

    def describe(self):
        """Describe the selected model in :attr:`label`; returns (model, metadata) or None."""
        try:
            model, metadata = self.model()
        except (ValueError, KeyError):
            self.label.setText(NO_MODEL)
            return None
        cfg = getattr(model, "config", {})
        self.label.setText(
            f"{getattr(model, 'ndim', 2)}D U-Net, depth {cfg.get('depth')}, base "
            f"{cfg.get('base_channels')}, {cfg.get('num_classes')} classes"
        )
        return model, metadata

    def _on_change(self, *_):
        self.describe()
        self.changed.emit()

    def _on_new_model(self, *_):
        """A new training finished (or a run was reloaded): predict with it from now on."""
        if self.source.currentIndex() == 0:
            self._on_change()
        else:
            self.source.setCurrentIndex(0)

    @guarded
    def _on_load(self, *_):
        path, _ = QFileDialog.getOpenFileName(self, "Load model", "", "Model (*.safetensors)")
        if path:
            self.load_model(path)
