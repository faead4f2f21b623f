"""The "Train U-Net" dock widget: settings, Start/Pause/Stop in a worker, live curves and preview.

Every training is a run folder (:mod:`napari_unet.core.runs`): Start writes the pairs and
settings there, then trains that folder as written (:meth:`TrainWidget.start_run`, the one step
that a child process can replace), with checkpoints, metrics and the final model in it.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_unet.widgets import _jobs
from napari_unet.widgets._common import (
    current_plane,
    error_message,
    guarded,
    shared_models,
    show_error,
    show_info,
    upsert_layer,
)
from napari_unet.widgets._plot import TrainingPlot
from napari_unet.widgets._runs_panel import RunsPanel, reload_run, write_gui_run
from napari_unet.widgets._train_form import TrainForm

PREVIEW_LAYER = "live prediction"
AUGMENT_LAYER = "augmentation preview"
#: steps between "last" checkpoints of a GUI training (a crash of napari keeps the model)
CHECKPOINT_EVERY = 50


class TrainWidget(QWidget):
    """Train a U-Net on (image, labels) layer pairs in a background thread.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.form = TrainForm(napari_viewer)
        self.start, self.pause, self.stop = (QPushButton(t) for t in ("Start", "Pause", "Stop"))
        self.save_button = QPushButton("Save model…")
        self.progress = QProgressBar()
        self.status = QLabel("ready")
        self.status.setWordWrap(True)
        self.plot = TrainingPlot()
        self.runs = RunsPanel()
        self.registry = shared_models(napari_viewer)

        layout = QVBoxLayout(self)
        layout.addWidget(self.form)
        row = QHBoxLayout()
        for w in (self.start, self.pause, self.stop, self.save_button):
            row.addWidget(w)
        layout.addLayout(row)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.runs)
        layout.addStretch(1)

        self.trainer = None
        self.worker = None
        self.run_dir = None
        self.snapshots = None
        self._finished_run = None
        self._state: dict = {}
        self._preview_worker = None
        self._preview_timer = QTimer(self)
        self._preview_timer.setInterval(3000)
        self._preview_timer.timeout.connect(self.refresh_preview)
        self.start.clicked.connect(self._on_start)
        self.pause.clicked.connect(self._on_pause)
        self.stop.clicked.connect(self._on_stop)
        self.save_button.clicked.connect(self._on_save)
        self.form.finetune.clicked.connect(self._on_finetune)
        self.form.preview_aug.clicked.connect(self._on_preview_aug)
        self.runs.reload_button.clicked.connect(self._on_reload)
        self.runs.continue_button.clicked.connect(self._on_continue)
        self._show_runs()
        window = getattr(napari_viewer, "window", None)
        self._main_window = getattr(window, "_qt_window", None)
        if self._main_window is not None:
            self._main_window.installEventFilter(self)
        self._update_buttons()

    # ------------------------------------------------------------------ run control
    def is_training(self) -> bool:
        return self.worker is not None

    def start_training(self, *, continue_training: bool = False):
        """Write a run folder and train it in a worker thread; returns the worker (None if refused).

        ``continue_training``: fine-tune the current model on all pairs so far (this viewer's
        earlier runs' pairs, updated by the pairs of the form); otherwise the form's pairs from
        scratch (or from the "Fine-tune from…" model).
        """
        if self.is_training():
            show_info("Training is already running: Pause, Stop, or wait for it to finish.")
            return None
        config = self.form.config()
        config = dataclasses.replace(config, checkpoint_every=config.checkpoint_every
                                     or CHECKPOINT_EVERY)
        run_dir = write_gui_run(self.form, self.registry, config,
                                continue_training=continue_training)
        return self.start_run(run_dir)

    def start_run(self, run_dir):
        """Train the run folder as written, in a worker thread; returns the worker."""
        from napari.qt.threading import create_worker

        from napari_unet.core.runs import set_status, trainer_from_run

        # on the CPU the training thread leaves one core to the GUI
        try:
            trainer = trainer_from_run(run_dir, threads=_jobs.background_threads())
        except Exception:
            set_status(run_dir, "error")
            raise
        self._state = {"done": threading.Event(), "thread": None}
        self.snapshots = _jobs.StepSnapshots(trainer)
        worker = create_worker(_jobs.run_training, trainer, self._state, run_dir=run_dir,
                               snapshots=self.snapshots, _start_thread=False)
        worker.yielded.connect(self._on_event)
        worker.errored.connect(_report)
        worker.finished.connect(self._on_finished)
        self.trainer, self.worker, self.run_dir = trainer, worker, Path(run_dir)
        self._finished_run = None
        self.plot.clear()
        self._dock_plot()
        self.status.setText(f"starting… (run folder {run_dir})")
        worker.start()
        if self.form.live.isChecked():
            self._preview_timer.start()
        self._show_runs()
        self._update_buttons()
        return worker

    def continue_training(self):
        """Fine-tune the current model on all pairs so far; returns the worker."""
        return self.start_training(continue_training=True)

    def reload_run(self, run_dir=None):
        """Make a run's model (model, else best, else last) the current one: roll back."""
        if self.is_training():
            raise ValueError("Reload run: a training is running; Stop it first")
        path = reload_run(self.registry, run_dir if run_dir is not None else self.runs.chosen())
        self.runs.current.setText(f"current model: {path}")
        return path

    def _show_runs(self):
        from napari_unet.core.runs import list_runs

        self.runs.show_runs(list_runs(paths=self.registry.runs))

    def toggle_pause(self):
        if self.trainer is None or not self.is_training():
            raise ValueError("Pause: nothing is training; press Start first")
        if self.pause.text() == "Pause":
            self.trainer.request_pause()
            self.pause.setText("Resume")
        else:
            self.trainer.request_resume()
            self.pause.setText("Pause")

    def stop_training(self, *, wait: bool = False, timeout: float = 60.0) -> None:
        """Ask the trainer to stop at the next step; with ``wait``, block until it has."""
        if self.trainer is None or not self.is_training():
            return
        self.trainer.request_stop()
        self.trainer.request_resume()  # a paused trainer must wake up to see the stop
        if wait and "done" in self._state and self._state["done"].wait(timeout):
            self._publish()  # only once it has stopped: never a copy taken during a step

    def _publish(self):
        """Once the training has ended: write the run's model.safetensors and publish it."""
        if self.trainer is None or self._finished_run == self.run_dir:
            return
        from napari_unet.core.io import save_model

        model, metadata = self.trainer.snapshot()
        path = None
        if self.run_dir is not None:
            path = save_model(model, self.run_dir / "model.safetensors", **metadata)
            self._finished_run = self.run_dir
            self.runs.current.setText(f"current model: {path}")
        self.registry.publish(model, metadata, "Train U-Net (this session)", path=path)

    def _on_event(self, event):
        total = max(int(event.total_steps or 1), 1)
        self.progress.setMaximum(total)
        self.progress.setValue(min(int(event.step), total))
        if event.kind == "step" and event.loss is not None:
            self.plot.add_loss(event.step, event.loss)
            eta = f", about {event.eta_s:.0f} s left" if event.eta_s else ""
            self.status.setText(
                f"step {event.step}/{total}: loss {event.loss:.4f}, "
                f"{event.steps_per_s or 0:.1f} steps/s{eta}"
            )
        elif event.kind == "validation" and event.metrics:
            self.plot.add_metrics(event.step, event.metrics)
        elif event.kind == "paused":
            self.status.setText(f"paused at step {event.step}: press Resume")
        elif event.kind in ("done", "stopped"):
            self.status.setText(event.message or f"{event.kind} at step {event.step}")

    def _on_finished(self):
        self._preview_timer.stop()
        self.worker = None
        self.plot.flush()
        self.pause.setText("Pause")
        try:
            self._publish()
            self._show_runs()
        except Exception as exc:
            show_error(error_message(exc))
        self._update_buttons()

    def _update_buttons(self):
        running = self.is_training()
        self.start.setEnabled(True)  # a second Start is refused with a message, not greyed out
        self.pause.setEnabled(running)
        self.stop.setEnabled(running)
        self.save_button.setEnabled(self.trainer is not None or self.registry.model is not None)
        self.runs.reload_button.setEnabled(not running)

    def _dock_plot(self):
        window = getattr(self.viewer, "window", None)
        if window is not None and self.plot.parent() is None:
            window.add_dock_widget(self.plot, name="Training curves", area="right")

    # ------------------------------------------------------------------ live preview
    def refresh_preview(self):
        """Predict the visible part of the image with the current model, in a worker."""
        from napari.qt.threading import create_worker

        if self.trainer is None or self._preview_worker is not None:
            return None
        image_layer = self.form.layer_pairs()[0][0]
        plane, _ = current_plane(image_layer, self.viewer)
        corners = np.asarray(image_layer.corner_pixels)[:, -2:]
        (r0, c0), (r1, c1) = corners[0], corners[1] + 1
        r0, c0 = max(int(r0), 0), max(int(c0), 0)
        r1, c1 = min(int(r1), plane.shape[0], r0 + 512), min(int(c1), plane.shape[1], c0 + 512)
        if r1 - r0 < 8 or c1 - c0 < 8:
            return None
        crop = plane[r0:r1, c0:c1]
        worker = create_worker(
            _jobs.live_prediction, self.snapshots, np.array(crop),
            channel_axis=-1 if image_layer.rgb else None, _start_thread=False,
        )
        offset = np.asarray(image_layer.translate[-2:]) + np.array([r0, c0]) * image_layer.scale[-2:]
        self._preview_geometry = dict(translate=offset, scale=image_layer.scale[-2:])
        # bound methods, not closures: a finished worker must not keep the widget (and viewer) alive
        worker.returned.connect(self._show_preview)
        worker.errored.connect(_report)
        worker.finished.connect(self._on_preview_finished)
        self._preview_worker = worker
        worker.start()
        return worker

    def _show_preview(self, labels):
        upsert_layer(self.viewer, labels, PREVIEW_LAYER, "labels", opacity=0.4,
                     **self._preview_geometry)

    def _on_preview_finished(self):
        self._preview_worker = None

    def preview_augmentation(self):
        """Add 8 augmented samples of the first pair as image + labels stack layers (a worker)."""
        from napari.qt.threading import create_worker

        pair = self.form.training_pairs()[0]
        image = pair.image if pair.channel_axis is None else np.mean(pair.image, axis=-1)
        worker = create_worker(_jobs.augmentation_samples, image, pair.labels,
                               self.form.config(preview=True).augment, _start_thread=False)

        worker.returned.connect(self._show_augmentation)
        worker.errored.connect(_report)
        worker.start()
        return worker

    def _show_augmentation(self, result):
        images, labels = result
        upsert_layer(self.viewer, images, AUGMENT_LAYER, "image")
        upsert_layer(self.viewer, labels, AUGMENT_LAYER + " labels", "labels", opacity=0.4)

    # ------------------------------------------------------------------ files
    def save_model(self, path) -> Path:
        """Save the current model; during training a copy taken between two steps."""
        from napari_unet.core.io import save_model

        self._check_trained()
        if self.is_training():
            model, metadata = self.snapshots.get()
        else:  # the published model (the last training's, or a reloaded run's)
            model, metadata = self.registry.model, self.registry.metadata
        return Path(save_model(model, path, **metadata))

    def _check_trained(self) -> None:
        if self.trainer is None and self.registry.model is None:
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
            from napari_unet.core.io import read_metadata

            read_metadata(path)  # a clear error now rather than at Start
            self.form.init_model = path
            self.form.init_label.setText(Path(path).name)

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


def _report(exc: BaseException) -> None:
    """A worker's exception as a napari error notification."""
    show_error(error_message(exc))
