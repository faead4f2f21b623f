"""The "Train U-Net" dock widget: settings, Start/Pause/Stop of a training child process.

Every training is a run folder (:mod:`napari_unet.engine.runs`): Start writes the pairs and
settings there, then :meth:`TrainWidget.start_run` trains that folder in a child process,
``napari-unet train --run DIR --events - --control -`` (the command line's engine; under
``torchrun`` for several GPUs), through the Qt-free :class:`~napari_unet.engine.client.
TrainingClient`; :class:`~napari_unet.widgets.train_view.TrainingView` renders what it reports.
Pause, Resume, Stop, Save and the live preview are control lines to the child, which writes
the checkpoints, the preview labels and the model into the run folder. Nothing in napari copies
a model while it trains, and the child's memory (GPU included) goes when it ends; a crash of
the child is a notification, never a crash of napari.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from napari_unet.engine.client import TrainingClient
from napari_unet.widgets import jobs, live
from napari_unet.widgets.common import (
    error_message,
    guarded,
    shared_models,
    show_error,
    show_info,
    upsert_layer,
)
from napari_unet.widgets.rule_line import RuleLine
from napari_unet.widgets.runs_panel import RunsPanel, reload_run, write_gui_run
from napari_unet.widgets.train_form import TrainForm
from napari_unet.widgets.train_view import TrainingView

logger = logging.getLogger(__name__)

PREVIEW_LAYER = live.PREVIEW_LAYER
AUGMENT_LAYER = "augmentation preview"
#: steps between "last" checkpoints of a GUI training (a crash keeps the model)
CHECKPOINT_EVERY = 50


class TrainWidget(QWidget):
    """Train a U-Net on (image, labels) layer pairs in a child process.

    ``client`` talks to the child (no Qt), ``view`` shows its progress.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.registry = shared_models(napari_viewer)
        self.form = TrainForm(napari_viewer)
        self.view = TrainingView(self)
        self.client = TrainingClient(self.view)
        self.start, self.pause, self.stop = (QPushButton(t) for t in ("Start", "Pause", "Stop"))
        self.save_button = QPushButton("Save model…")
        self.runs = RunsPanel()
        self.rule = RuleLine(napari_viewer, self.form, busy=self.is_training)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form)
        layout.addWidget(self.rule)
        row = QHBoxLayout()
        for w in (self.start, self.pause, self.stop, self.save_button):
            row.addWidget(w)
        layout.addLayout(row)
        layout.addWidget(self.view.progress)
        layout.addWidget(self.view.status)
        layout.addWidget(self.form.advanced)  # the network and optimiser, folded
        layout.addWidget(self.runs)
        layout.addStretch(1)
        self._connect()
        self.show_runs()
        window = getattr(napari_viewer, "window", None)
        self._main_window = getattr(window, "_qt_window", None)
        if self._main_window is not None:
            self._main_window.installEventFilter(self)
        self.update_buttons()

    def _connect(self) -> None:
        self.start.clicked.connect(self._on_start)
        self.pause.clicked.connect(self._on_pause)
        self.stop.clicked.connect(self._on_stop)
        self.save_button.clicked.connect(self._on_save)
        self.form.finetune.clicked.connect(self._on_finetune)
        self.form.shipped.activated.connect(self._on_shipped)
        self.form.preview_aug.clicked.connect(self._on_preview_aug)
        self.runs.reload_button.clicked.connect(self._on_reload)
        self.runs.continue_button.clicked.connect(self._on_continue)

    def update_rule(self) -> str:
        """Show which pixels count in training for the chosen pairs (:class:`RuleLine`)."""
        return self.rule.update_rule()

    # ------------------------------------------------------------------ run control
    def is_training(self) -> bool:
        """True from Start until the child has ended and its model is published."""
        return self.client.is_training()

    def start_training(self, *, continue_training: bool = False):
        """Write a run folder and train it in a child process; returns the process (None if
        refused).

        ``continue_training``: fine-tune the current model on all pairs so far (this viewer's
        earlier runs' pairs, updated by the pairs of the form); otherwise the form's pairs from
        scratch (or from the "Fine-tune from…" model). The form's plan decides the settings
        (fine-tuning at a lower rate, with the parent's architecture); settings the device
        cannot hold, or a batch the GPUs cannot share, are refused before anything is written
        (ValueError naming the fix).
        """
        self.registry.wait_for_model()  # a training that just ended: continue from its model
        if self.is_training():
            show_info("Training is already running: Pause, Stop, or wait for it to finish.")
            return None
        parent = self._parent_architecture(continue_training)
        config = self.form.config(fine_tuning=continue_training or self.form.init_model
                                  is not None, architecture=parent)
        config = dataclasses.replace(
            config, checkpoint_every=config.checkpoint_every or CHECKPOINT_EVERY,
            threads=config.threads or jobs.background_threads())
        run_dir = write_gui_run(self.form, self.registry, config,
                                continue_training=continue_training)
        return self.start_run(run_dir, nproc=self.form.nproc())

    def _parent_architecture(self, continue_training: bool) -> dict | None:
        """The architecture of the model the run continues (None: a new network, or a plain
        PyTorch file, which the training reads)."""
        if continue_training:
            return None if self.registry.model is None else dict(self.registry.model.config)
        path = self.form.init_model
        if path is None or not str(path).endswith(".safetensors"):
            return None
        from napari_unet.core.io.model_file import read_metadata

        arch = read_metadata(path).get("architecture")
        return arch if isinstance(arch, dict) else None

    def start_run(self, run_dir, *, nproc: int | None = None):
        """Train the run folder as written in a child process; returns the process."""
        nproc = self.form.nproc() if nproc is None else nproc
        self.update_rule()
        proc = self.client.start(run_dir, device=self.form.controls["device"].currentText(),
                                 nproc=nproc)
        self.view.started(Path(run_dir))
        self.show_runs()
        self.update_buttons()
        return proc

    def continue_training(self):
        """Fine-tune the current model on all pairs so far; returns the child process."""
        return self.start_training(continue_training=True)

    def toggle_pause(self) -> None:
        self.pause.setText("Resume" if self.client.toggle_pause() else "Pause")

    def stop_training(self, *, wait: bool = False, timeout: float = 60.0) -> None:
        """Ask the child to stop at the next step (it writes its model); with ``wait``, block
        until it has ended (never an orphan) and its model is published."""
        self.client.stop(wait=wait, timeout=timeout)

    def reload_run(self, run_dir=None):
        """Make a run's model (model, else best, else last) the current one: roll back."""
        if self.is_training():
            raise ValueError("Reload run: a training is running; Stop it first")
        path = reload_run(self.registry, run_dir if run_dir is not None else self.runs.chosen())
        self.runs.current.setText(f"current model: {path}")
        return path

    def show_runs(self) -> None:
        from napari_unet.engine.runs import list_runs

        self.runs.show_runs(list_runs(paths=self.registry.runs))

    def update_buttons(self) -> None:
        running, proc = self.is_training(), self.client.proc
        self.start.setEnabled(True)  # a second Start is refused with a message, not greyed out
        self.pause.setEnabled(proc is not None)
        self.stop.setEnabled(proc is not None)
        self.save_button.setEnabled(running or self.registry.model is not None)
        self.runs.reload_button.setEnabled(not running)

    def preview_augmentation(self):
        """Add 8 augmented samples of the first pair as image + labels stack layers (a worker)."""
        from napari.qt.threading import create_worker

        pair = self.form.data.training_pairs()[0]
        if pair.labels.ndim != 2:
            raise ValueError("Preview augmentation: shows 2D samples; tick 'train a 2D model on "
                             "the shown plane' to preview a plane of the volume")
        image = pair.image if pair.channel_axis is None else np.mean(pair.image, axis=-1)
        worker = create_worker(jobs.augmentation_samples, image, pair.labels,
                               self.form.config(preview=True).augment, _start_thread=False)
        worker.returned.connect(self._show_augmentation)
        worker.errored.connect(lambda exc: show_error(error_message(exc)))
        worker.start()
        return worker

    def _show_augmentation(self, result):
        images, labels = result
        upsert_layer(self.viewer, images, AUGMENT_LAYER, "image")
        upsert_layer(self.viewer, labels, AUGMENT_LAYER + " labels", "labels", opacity=0.4)

    # ------------------------------------------------------------------ files
    def save_model(self, path) -> Path:
        """Save the current model to ``path``. During training the child writes a checkpoint
        at the next step boundary and the file is copied when it names it (a notification
        says so); otherwise the published model (the last training's, or a reloaded run's)."""
        from napari_unet.core.io.model_file import save_model

        self.registry.wait_for_model()  # a training that just ended: its model, not the one before
        self._check_trained()
        if self.client.proc is not None:
            return self.client.save(path)
        return Path(save_model(self.registry.model, path, **self.registry.metadata))

    def _check_trained(self) -> None:
        if not self.is_training() and self.registry.model is None:
            raise ValueError("Save model: nothing trained yet; press Start first")

    # ------------------------------------------------------------------ slots and closing
    @guarded
    def _on_start(self, *_):
        self.start_training()

    @guarded
    def _on_continue(self, *_):
        self.continue_training()

    @guarded
    def _on_reload(self, *_):
        show_info(f"Current model: {self.reload_run()}")

    @guarded
    def _on_pause(self, *_):
        self.toggle_pause()

    @guarded
    def _on_stop(self, *_):
        self.stop_training()

    @guarded
    def _on_finetune(self, *_):
        path, _ = QFileDialog.getOpenFileName(self, "Model to fine-tune", "", "Model (*.safetensors)")
        if path:
            from napari_unet.core.io.model_file import read_metadata

            read_metadata(path)  # a clear error now rather than at Start
            self.form.init_model = path
            self.form.init_label.setText(Path(path).name)

    @guarded
    def _on_shipped(self, index, *_):
        """Fine-tune from a shipped model (its name chosen in the form's list)."""
        if index <= 0:
            return
        from napari_unet.models import model_path

        name = self.form.shipped.itemText(index)
        self.form.shipped.setCurrentIndex(0)
        self.form.init_model = model_path(name)  # a clear error when not shipped yet
        self.form.init_label.setText(f"{name} (shipped)")

    @guarded
    def _on_save(self, *_):
        self._check_trained()  # before the file dialog
        path, _ = QFileDialog.getSaveFileName(self, "Save model", "unet.safetensors",
                                              "Model (*.safetensors)")
        if path:
            show_info(f"Model saved to {self.save_model(path)}")

    @guarded
    def _on_preview_aug(self, *_):
        self.preview_augmentation()

    def eventFilter(self, obj, event):
        if obj is getattr(self, "_main_window", None) and event.type() == QEvent.Type.Close:
            self.stop_training(wait=True)
        return False

    def event(self, event):
        if event.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.stop_training(wait=True)  # the dock widget was removed
        return super().event(event)

    def closeEvent(self, event):
        self.stop_training(wait=True)
        super().closeEvent(event)
