"""The "Train U-Net" dock widget: settings, Start/Pause/Stop of a training child process.

Every training is a run folder (:mod:`napari_unet.engine.runs`): Start writes the pairs and
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
from pathlib import Path

import numpy as np
from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from napari_unet.engine import child
from napari_unet.widgets import jobs, live, train_client
from napari_unet.widgets.common import (
    error_message,
    guarded,
    shared_models,
    show_error,
    show_info,
    upsert_layer,
)
from napari_unet.widgets.plot import TrainingPlot
from napari_unet.widgets.runs_panel import RunsPanel, reload_run, write_gui_run
from napari_unet.widgets.train_client import ChildClient
from napari_unet.widgets.train_form import TrainForm

logger = logging.getLogger(__name__)

PREVIEW_LAYER = live.PREVIEW_LAYER
AUGMENT_LAYER = "augmentation preview"
#: steps between "last" checkpoints of a GUI training (a crash keeps the model)
CHECKPOINT_EVERY = 50
#: ms between two reads of the child's events
POLL_MS = 50


class TrainWidget(ChildClient, QWidget):
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
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        # a size that no text changes: updating it repaints the bar, never re-lays out the dock
        self.progress.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.status = QLabel("ready")
        self.status.setWordWrap(True)
        self.plot = TrainingPlot(min_interval=train_client.PLOT_S)
        self.runs = RunsPanel()
        self.registry = shared_models(napari_viewer)

        self.rule = QLabel("")  # the sparse-annotation rule and what takes part (issue 11)
        self.rule.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(self.form)
        layout.addWidget(self.rule)
        row = QHBoxLayout()
        for w in (self.start, self.pause, self.stop, self.save_button):
            row.addWidget(w)
        layout.addLayout(row)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.form.advanced)  # the network and optimiser, folded
        layout.addWidget(self.runs)
        layout.addStretch(1)

        #: the training child (:class:`~napari_unet.engine.process.TrainingProcess`) or None
        self.proc = None
        self.run_dir = None
        #: the terminal event of the last training (done, stopped or error)
        self.terminal: dict | None = None
        self._pending_saves: list[Path] = []
        self._preview_pending = False
        self._preview_pair = 0
        #: the newest step and preview events not shown yet (flush_ui shows them)
        self._last_step = self._preview_event = None
        self._flushed_at = 0.0
        #: the final model file being read by the loader thread (a Future), and its path
        self._loading = self._loading_path = None
        self._gc_frozen = False  # napari's objects hidden from the collector while training
        #: previews of the child shown in the live prediction layer, progress updates shown
        #: (tests, benchmarks)
        self.previews_shown = self.steps_shown = 0
        self._preview_region = self._preview_geometry = None
        self._poll_timer = QTimer(self)
        self._poll_timer.setInterval(POLL_MS)
        self._poll_timer.timeout.connect(self.poll)
        self._preview_timer = QTimer(self)
        self._preview_timer.setInterval(3000)
        self._preview_timer.timeout.connect(self.refresh_preview)
        self._flush_timer = QTimer(self)  # single shot: started when something waits to be shown
        self._flush_timer.setSingleShot(True)
        self._flush_timer.timeout.connect(self.flush_ui)
        self._preview_apply_timer = QTimer(self)  # a preview: half-way between two flushes
        self._preview_apply_timer.setSingleShot(True)
        self._preview_apply_timer.timeout.connect(self.flush_preview)
        self.start.clicked.connect(self._on_start)
        self.pause.clicked.connect(self._on_pause)
        self.stop.clicked.connect(self._on_stop)
        self.save_button.clicked.connect(self._on_save)
        self.form.finetune.clicked.connect(self._on_finetune)
        self.form.shipped.activated.connect(self._on_shipped)
        self.form.preview_aug.clicked.connect(self._on_preview_aug)
        self.runs.reload_button.clicked.connect(self._on_reload)
        self.runs.continue_button.clicked.connect(self._on_continue)
        self._show_runs()
        window = getattr(napari_viewer, "window", None)
        self._main_window = getattr(window, "_qt_window", None)
        if self._main_window is not None:
            self._main_window.installEventFilter(self)
        self._update_buttons()
        # the rule line follows edits (of any layer, the pairs, the plane) while nothing trains
        self._rule_dirty = False
        self._rule_timer = QTimer(self)
        self._rule_timer.setInterval(1000)
        self._rule_timer.timeout.connect(self._refresh_rule)
        self._rule_timer.start()
        napari_viewer.layers.events.inserted.connect(self._watch_layer)
        napari_viewer.layers.events.removed.connect(self._mark_rule)
        napari_viewer.dims.events.current_step.connect(self._mark_rule)
        for layer in napari_viewer.layers:
            self._watch_layer(layer=layer)
        for box in (self.form.image_combo, self.form.labels_combo):
            box.currentIndexChanged.connect(self._mark_rule)
        self.form.complete.toggled.connect(self._mark_rule)
        self.form.planes.toggled.connect(self._mark_rule)
        self.update_rule()

    # ------------------------------------------------------------------ annotation rule
    def update_rule(self) -> str:
        """Show which pixels count in training (the rule, cells, pixels) for the chosen pairs."""
        try:
            text = self.form.annotation_summary()
        except (ValueError, TypeError, LookupError) as exc:
            text = f"annotation: {exc}"
        self.rule.setText(text)
        return text

    def _watch_layer(self, event=None, layer=None):
        layer = layer if layer is not None else getattr(event, "value", None)
        for name in ("data", "paint", "set_data"):
            if layer is not None and hasattr(layer.events, name):
                getattr(layer.events, name).connect(self._mark_rule)
        self._mark_rule()

    def _mark_rule(self, *_):
        self._rule_dirty = True

    def _refresh_rule(self):
        if self._rule_dirty and not self.is_training() and self.isVisible():
            self._rule_dirty = False
            try:
                self.update_rule()
            except Exception as exc:  # from a timer: never raise into Qt
                self.rule.setText(f"annotation: {error_message(exc)}")

    # ------------------------------------------------------------------ run control
    def is_training(self) -> bool:
        """True from Start until the child has ended and its model is published."""
        return self.proc is not None or self._loading is not None

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
        from napari_unet.engine.runs import set_status

        run_dir = Path(run_dir)
        nproc = self.form.nproc() if nproc is None else nproc
        self.update_rule()
        frozen = train_client.freeze_gc()
        try:
            proc = child.launch(run_dir, device=self.form.controls["device"].currentText(), nproc=nproc)
        except Exception:
            train_client.unfreeze_gc(frozen)
            set_status(run_dir, "error")
            raise
        self.proc, self.run_dir, self.terminal = proc, run_dir, None
        self._gc_frozen = frozen
        self._pending_saves, self._preview_pending = [], False
        self._last_step = self._preview_event = None
        self._start_preview(run_dir)
        self.plot.clear()
        self.plot.hold = True  # its pictures are shown by flush_ui, with the progress
        self.progress.setFormat("starting…")
        self._dock_plot()
        self.status.setText(f"starting… (run folder {run_dir})")
        self._poll_timer.start()
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
        from napari_unet.engine.runs import list_runs

        self.runs.show_runs(list_runs(paths=self.registry.runs))

    def _update_buttons(self):
        running = self.is_training()
        self.start.setEnabled(True)  # a second Start is refused with a message, not greyed out
        self.pause.setEnabled(self.proc is not None)
        self.stop.setEnabled(self.proc is not None)
        self.save_button.setEnabled(running or self.registry.model is not None)
        self.runs.reload_button.setEnabled(not running)

    def _dock_plot(self):
        window = getattr(self.viewer, "window", None)
        if window is not None and self.plot.parent() is None:
            window.add_dock_widget(self.plot, name="Training curves", area="right")

    def preview_augmentation(self):
        """Add 8 augmented samples of the first pair as image + labels stack layers (a worker)."""
        from napari.qt.threading import create_worker

        pair = self.form.training_pairs()[0]
        if pair.labels.ndim != 2:
            raise ValueError("Preview augmentation: shows 2D samples; tick 'train a 2D model on "
                             "the shown plane' to preview a plane of the volume")
        image = pair.image if pair.channel_axis is None else np.mean(pair.image, axis=-1)
        worker = create_worker(jobs.augmentation_samples, image, pair.labels,
                               self.form.config(preview=True).augment, _start_thread=False)

        worker.returned.connect(self._show_augmentation)
        worker.errored.connect(_report)
        worker.start()
        return worker

    def _show_augmentation(self, result):
        images, labels = result
        upsert_layer(self.viewer, images, AUGMENT_LAYER, "image")
        upsert_layer(self.viewer, labels, AUGMENT_LAYER + " labels", "labels", opacity=0.4)

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


def _report(exc: BaseException) -> None:
    """A worker's exception as a napari error notification."""
    show_error(error_message(exc))
