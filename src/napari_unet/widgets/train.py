"""The "Train U-Net" dock widget: settings, Start/Pause/Stop of a training child process.

Every training is a run folder (:mod:`napari_unet.core.runs`): Start writes the pairs and
settings there, then :meth:`TrainWidget.start_run` trains that folder in a child process,
``napari-unet train --run DIR --events - --control -`` (the command line's engine; under
``torchrun`` for several GPUs). A QTimer reads its JSON-line events without blocking; Pause,
Resume, Stop, Save and the live preview are control lines to the child, which writes the
checkpoints, the preview labels and the model into the run folder. Nothing in napari copies a
model while it trains, and the child's memory (GPU included) goes when it ends; a crash of the
child is a notification, never a crash of napari.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
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

from napari_unet.widgets import _child, _jobs
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

logger = logging.getLogger(__name__)

PREVIEW_LAYER = "live prediction"
AUGMENT_LAYER = "augmentation preview"
#: steps between "last" checkpoints of a GUI training (a crash keeps the model)
CHECKPOINT_EVERY = 50
#: ms between two reads of the child's events
POLL_MS = 50


class TrainWidget(QWidget):
    """Train a U-Net on (image, labels) layer pairs in a child process.

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

        #: the training child (:class:`~napari_unet.training_process.TrainingProcess`) or None
        self.proc = None
        self.run_dir = None
        #: the terminal event of the last training (done, stopped or error)
        self.terminal: dict | None = None
        self._pending_saves: list[Path] = []
        self._preview_pending = False
        self._preview_pair = 0
        self._poll_timer = QTimer(self)
        self._poll_timer.setInterval(POLL_MS)
        self._poll_timer.timeout.connect(self.poll)
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
        return self.proc is not None

    def start_training(self, *, continue_training: bool = False):
        """Write a run folder and train it in a child process; returns the process (None if
        refused).

        ``continue_training``: fine-tune the current model on all pairs so far (this viewer's
        earlier runs' pairs, updated by the pairs of the form); otherwise the form's pairs from
        scratch (or from the "Fine-tune from…" model). Settings the device cannot hold are
        refused before anything is written (ValueError naming smaller ones).
        """
        if self.is_training():
            show_info("Training is already running: Pause, Stop, or wait for it to finish.")
            return None
        config = self.form.config()
        nproc = self.form.nproc()
        if nproc > 1 and (config.batch_size or 1) % nproc:
            fix = -(-(config.batch_size or 1) // nproc) * nproc
            raise ValueError(f"batch: with {nproc} GPUs the batch must be a multiple of "
                             f"{nproc} (each trains batch / {nproc}), got {config.batch_size}; "
                             f"use {fix}")
        config = dataclasses.replace(
            config, checkpoint_every=config.checkpoint_every or CHECKPOINT_EVERY,
            threads=config.threads or _jobs.background_threads())
        _child.check_memory(config, self.form.training_pairs(), nproc=nproc)
        run_dir = write_gui_run(self.form, self.registry, config,
                                continue_training=continue_training)
        return self.start_run(run_dir, nproc=nproc)

    def start_run(self, run_dir, *, nproc: int | None = None):
        """Train the run folder as written in a child process; returns the process."""
        from napari_unet.core.runs import set_status

        run_dir = Path(run_dir)
        nproc = self.form.nproc() if nproc is None else nproc
        try:
            proc = _child.launch(run_dir, device=self.form.device.currentText(), nproc=nproc)
        except Exception:
            set_status(run_dir, "error")
            raise
        self.proc, self.run_dir, self.terminal = proc, run_dir, None
        self._pending_saves, self._preview_pending = [], False
        self._preview_pair = _pair_index(run_dir, self.form)
        self.plot.clear()
        self._dock_plot()
        self.status.setText(f"starting… (run folder {run_dir})")
        self._poll_timer.start()
        if self.form.live.isChecked():
            self._preview_timer.start()
        self._show_runs()
        self._update_buttons()
        return proc

    def continue_training(self):
        """Fine-tune the current model on all pairs so far; returns the child process."""
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
        if not self.is_training():
            raise ValueError("Pause: nothing is training; press Start first")
        if self.pause.text() == "Pause":
            self.proc.pause()
            self.pause.setText("Resume")
        else:
            self.proc.resume()
            self.pause.setText("Pause")

    def stop_training(self, *, wait: bool = False, timeout: float = 60.0) -> None:
        """Ask the child to stop at the next step (it writes its model); with ``wait``, block
        until it has ended (stdin closed, then SIGTERM, then SIGKILL: never an orphan)."""
        if not self.is_training():
            return
        if not wait:
            self.proc.stop()
            self.status.setText("stopping at the next step…")
            return
        _child.shutdown(self.proc, timeout=timeout)
        self.poll()  # the last events, the model published

    # ------------------------------------------------------------------ events of the child
    def poll(self):
        """Handle the child's events read so far (QTimer, never blocks); returns them."""
        if self.proc is None:
            return []
        events = self.proc.poll()
        for event in events:
            try:
                self._on_event(event)
            except Exception as exc:  # a bad event must not stop the polling
                logger.exception("event %s", event.get("kind"))
                show_error(error_message(exc))
        if self.proc is not None and self.proc.finished and self.terminal is not None:
            self._on_finished()
        return events

    def _on_event(self, event: dict):
        kind, step = event["kind"], int(event.get("step") or 0)
        total = event.get("total_steps")
        if total:
            self.progress.setMaximum(max(int(total), 1))
            self.progress.setValue(min(step, int(total)))
        if kind == "step" and event.get("loss") is not None:
            self.plot.add_loss(step, event["loss"])
            eta = f", about {event['eta_s']:.0f} s left" if event.get("eta_s") else ""
            self.status.setText(f"step {step}/{total or '?'}: loss {event['loss']:.4f}, "
                                f"{event.get('steps_per_s') or 0:.1f} steps/s{eta}")
        elif kind == "started":
            self.status.setText(f"training on {event.get('device')}"
                                f" ({event.get('world_size', 1)} process(es))")
        elif kind == "validation" and event.get("metrics"):
            self.plot.add_metrics(step, event["metrics"])
        elif kind == "paused":
            self.status.setText(f"paused at step {step}: press Resume")
        elif kind == "checkpoint" and event.get("requested") and self._pending_saves:
            for path in self._pending_saves:
                shutil.copyfile(event["path"], path)
                show_info(f"Model (step {step}) saved to {path}")
            self._pending_saves = []
        elif kind == "preview":
            self._show_preview(event)
        elif kind in ("done", "stopped"):
            self.terminal = event
            self.status.setText(f"{kind} at step {step}: {event.get('model')}")
        elif kind == "error":
            self.terminal = event
            self.status.setText(f"training failed at step {step}: {event.get('message')}")
            show_error(f"Training failed: {event.get('message')}. Fix: {event.get('fix')}. "
                       f"The run folder keeps the last checkpoint: {self.run_dir}")

    def _on_finished(self):
        """The child has ended: publish its model (done/stopped), keep the run listed."""
        from napari_unet.core.runs import set_status

        self._poll_timer.stop()
        self._preview_timer.stop()
        terminal, self.proc = self.terminal, None
        self.plot.flush()
        self.pause.setText("Pause")
        try:
            if terminal.get("kind") == "error":
                if terminal.get("synthetic"):  # killed: the child could not say so itself
                    set_status(self.run_dir, "error")
            else:
                self._publish()
            self._show_runs()
        except Exception as exc:
            show_error(error_message(exc))
        self._update_buttons()

    def _publish(self):
        """Load the run's model file (written by the child) and make it the current model."""
        from napari_unet.core.io import load_model
        from napari_unet.core.runs import run_model_path

        path = run_model_path(self.run_dir)
        if path is None:
            raise ValueError(f"the training wrote no model into {self.run_dir}")
        model, metadata = load_model(path)
        self.runs.current.setText(f"current model: {path}")
        self.registry.publish(model, metadata, "Train U-Net (this session)", path=path)

    def _update_buttons(self):
        running = self.is_training()
        self.start.setEnabled(True)  # a second Start is refused with a message, not greyed out
        self.pause.setEnabled(running)
        self.stop.setEnabled(running)
        self.save_button.setEnabled(running or self.registry.model is not None)
        self.runs.reload_button.setEnabled(not running)

    def _dock_plot(self):
        window = getattr(self.viewer, "window", None)
        if window is not None and self.plot.parent() is None:
            window.add_dock_widget(self.plot, name="Training curves", area="right")

    # ------------------------------------------------------------------ live preview
    def refresh_preview(self) -> bool:
        """Ask the child to segment the visible part of the image (at most 512 × 512) with
        the current model; the ``preview`` event updates the layer. False if not asked."""
        if not self.is_training() or self._preview_pending:
            return False
        image_layer = self.form.layer_pairs()[0][0]
        plane, _ = current_plane(image_layer, self.viewer)
        corners = np.asarray(image_layer.corner_pixels)[:, -2:]
        (r0, c0), (r1, c1) = corners[0], corners[1] + 1
        r0, c0 = max(int(r0), 0), max(int(c0), 0)
        r1, c1 = min(int(r1), plane.shape[0], r0 + 512), min(int(c1), plane.shape[1], c0 + 512)
        if r1 - r0 < 8 or c1 - c0 < 8:
            return False
        offset = np.asarray(image_layer.translate[-2:]) + np.array([r0, c0]) * image_layer.scale[-2:]
        self._preview_geometry = dict(translate=offset, scale=image_layer.scale[-2:])
        self._preview_pending = self.proc.preview(self._preview_pair, ((r0, r1), (c0, c1)))
        return self._preview_pending

    def _show_preview(self, event: dict):
        self._preview_pending = False
        if not event.get("path"):
            logger.info("preview refused: %s", event.get("error"))
            return
        labels = np.load(event["path"])
        # same shape: the layer's data is replaced in place (no new layer)
        upsert_layer(self.viewer, labels, PREVIEW_LAYER, "labels", opacity=0.4,
                     **self._preview_geometry)

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
        """Save the current model to ``path``. During training the child writes a checkpoint
        at the next step boundary and the file is copied when it names it (a notification
        says so); otherwise the published model (the last training's, or a reloaded run's)."""
        from napari_unet.core.io import save_model

        self._check_trained()
        if self.is_training():
            self._pending_saves.append(Path(path))
            self.proc.request_checkpoint()
            return Path(path)
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


def _pair_index(run_dir: Path, form) -> int:
    """Index in the run's data of the form's first image layer (the live preview's image)."""
    import json

    names = [d.get("name") for d in json.loads((run_dir / "run.json").read_text())["data"]]
    try:
        first = form.layer_pairs()[0][0].name
    except ValueError:
        return 0
    hits = [i for i, name in enumerate(names) if name == first]
    return hits[-1] if hits else 0


def _report(exc: BaseException) -> None:
    """A worker's exception as a napari error notification."""
    show_error(error_message(exc))
