"""The runs part of the "Train U-Net" widget: this viewer's run folders, Reload, Continue training."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QHBoxLayout, QLabel, QListWidget, QPushButton, QVBoxLayout, QWidget


class RunsPanel(QWidget):
    """A list of run folders (status, steps, best validation IoU) and the buttons that use them.

    The Train widget connects ``reload_button`` (load the chosen run's model: roll back) and
    ``continue_button`` (fine-tune the current model on all pairs so far).
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setMaximumHeight(90)
        self.list.setToolTip("This viewer's trainings (run folders): status, steps, best IoU.")
        self.reload_button = QPushButton("Reload run")
        self.reload_button.setToolTip("Use the chosen run's model again (roll back).")
        self.continue_button = QPushButton("Continue training")
        self.continue_button.setToolTip(
            "Fine-tune the current model on all pairs so far: the pairs of this viewer's earlier "
            "runs and the pairs chosen above (corrected predictions included)."
        )
        self.current = QLabel("current model: none")
        self.current.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("runs of this viewer"))
        layout.addWidget(self.list)
        row = QHBoxLayout()
        row.addWidget(self.reload_button)
        row.addWidget(self.continue_button)
        layout.addLayout(row)
        layout.addWidget(self.current)
        self._paths: list = []

    def show_runs(self, infos) -> None:
        """Fill the list from :class:`napari_unet.engine.runs.RunInfo` objects (oldest first)."""
        chosen = self.chosen()
        self.list.clear()
        self._paths = [info.path for info in infos]
        for info in infos:
            self.list.addItem(info.describe())
        if chosen in self._paths:
            self.list.setCurrentRow(self._paths.index(chosen))

    def chosen(self):
        """Path of the selected run, else the newest, else None."""
        row = self.list.currentRow()
        if 0 <= row < len(self._paths):
            return self._paths[row]
        return self._paths[-1] if self._paths else None

    def select(self, path) -> None:
        if path in self._paths:
            self.list.setCurrentRow(self._paths.index(path))


def form_entries(form, viewer) -> dict:
    """The form's pairs keyed by (image layer, labels layer, plane): (name, TrainingPair)."""
    from napari_unet.widgets.common import current_plane

    layers, pairs = form.data.layer_pairs(), form.data.training_pairs()
    out = {}
    for (image_layer, labels_layer), pair in zip(layers, pairs, strict=True):
        # a volume's pair is the whole volume, whatever plane is shown
        index = ("volume",) if pair.labels.ndim == 3 else current_plane(labels_layer, viewer)[1]
        out[(image_layer.name, labels_layer.name, index)] = (image_layer.name, pair)
    return out


def write_gui_run(form, registry, config, *, continue_training: bool = False) -> Path:
    """Write the run folder of a GUI training (pairs, settings, seed, parent); returns it.

    A plain Start trains the form's pairs (from the form's "Fine-tune from…" model, if any);
    ``continue_training`` fine-tunes the current model (``registry``) on all pairs so far: the
    pairs of this viewer's earlier runs, updated by the form's (same layers and plane: the newer
    annotation wins). The pairs and the run are remembered on ``registry`` (per viewer).
    ``config`` is the plan of the run (fine-tuning's lower rate included, see
    :meth:`napari_unet.widgets.train.TrainWidget.start_training`).
    """
    from napari_unet.core.io.model_file import save_model
    from napari_unet.engine.runs import new_run_dir, write_run

    entries = form_entries(form, form.viewer)
    parent = form.init_model
    if continue_training:
        if registry.model is None:
            raise ValueError(
                "Continue training: no current model; press Start first or reload a run"
            )
        entries = {**registry.pairs, **entries}
        parent = registry.path
    run_dir = new_run_dir(form.runs_root.text() or None, name=next(iter(entries.values()))[0])
    if continue_training and parent is None:  # a model that is on no disk yet
        parent = save_model(registry.model, run_dir / "parent.safetensors", **registry.metadata)
    pairs = [pair for _, pair in entries.values()]
    write_run(run_dir, pairs, settings=config, seed=config.seed, parent_model=parent,
              sparse=any(getattr(p, "sparse", False) for p in pairs),
              names=[name for name, _ in entries.values()])
    registry.pairs.update(entries)
    registry.runs.append(run_dir)
    return run_dir


def reload_run(registry, run_dir) -> Path:
    """Publish a run's model (model, else best, else last) as the viewer's current model."""
    from napari_unet.core.io.model_file import load_model
    from napari_unet.engine.runs import run_model_path

    path = None if run_dir is None else run_model_path(run_dir)
    if path is None:
        raise ValueError(f"Reload run: no model file in {run_dir}; choose another run")
    model, metadata = load_model(path)
    registry.publish(model, metadata, f"run {Path(run_dir).name}", path=path)
    return path
