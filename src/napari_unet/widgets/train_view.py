"""What a training shows in the Train widget, and when: the progress bar, the status line, the
curves and the live prediction layer. :class:`TrainingView` renders what the Qt-free
:class:`~napari_unet.engine.client.TrainingClient` reports (it is the client's view).

The GUI thread does as little as it can while a training runs: every visible change costs a
repaint (and, with napari's OpenGL canvas in the window, a composition of the whole window).
So the client keeps only the latest step and preview; one single-shot QTimer
(:meth:`TrainingView.flush_ui`, at most every ``UI_MS``) shows the newest step and plot picture
together, in one repaint, and a change that would not change the text is skipped; a new preview
is shown half-way to the next flush (:meth:`TrainingView.flush_preview`), so that its canvas
repaint never adds to the progress bar's.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QProgressBar, QSizePolicy

from napari_unet.widgets import common, live
from napari_unet.widgets.plot import TrainingPlot

logger = logging.getLogger(__name__)

#: ms between two updates of what a training shows (progress bar and plot picture together in
#: one repaint; a new live preview half-way between two, in a repaint of its own): the newest
#: of each. Every repaint composes napari's whole window (15-20 ms in Xvfb's software OpenGL,
#: 30-40 ms with the canvas): one a second alone would hold the GUI thread in 1 % of a 10 ms
#: timer's ticks
UI_MS = 2000
#: seconds between two pictures of the training curves while training (QPainter, GUI thread)
PLOT_S = 2.0
#: ms between two reads of the child's events
POLL_MS = 50
#: ms between two live preview requests
PREVIEW_MS = 3000
#: seconds Predict or Save wait for the model of a training that just ended (a model file is
#: read and checked in well under a second; a slow network drive may take longer)
LOAD_TIMEOUT_S = 120.0


def set_text(widget, text: str) -> None:
    """``widget.setText(text)`` unless it shows that already (no repaint, no re-layout)."""
    if widget.text() != text:
        widget.setText(text)


class TrainingView:
    """The training's progress bar, status line, curves and live preview in ``widget`` (the
    Train widget: its viewer, form, registry and runs list). Implements
    :class:`~napari_unet.engine.client.ClientView`."""

    def __init__(self, widget):
        self.widget = widget
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        # a size that no text changes: updating it repaints the bar, never re-lays out the dock
        self.progress.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.status = QLabel("ready")
        self.status.setWordWrap(True)
        self.plot = TrainingPlot(min_interval=PLOT_S)
        #: previews shown in the live prediction layer, progress updates shown (tests, benchmarks)
        self.previews_shown = self.steps_shown = 0
        self.preview_region = self.preview_geometry = None
        self._preview_pair, self._flushed_at = 0, 0.0
        self.poll_timer = self._timer(POLL_MS, lambda: widget.client.poll())
        self.preview_timer = self._timer(PREVIEW_MS, self.refresh_preview)
        self.flush_timer = self._timer(None, self.flush_ui)
        self.preview_apply_timer = self._timer(None, self.flush_preview)

    def _timer(self, ms: int | None, slot) -> QTimer:
        """A repeating timer every ``ms``, or a single-shot one (``None``)."""
        timer = QTimer(self.widget)
        if ms is None:
            timer.setSingleShot(True)
        else:
            timer.setInterval(ms)
        timer.timeout.connect(slot)
        return timer

    # -- a training starts -------------------------------------------------------------------
    def started(self, run_dir) -> None:
        """Show a new training: cleared curves, the live preview's layer, polling on."""
        self.start_preview(run_dir)
        self.plot.clear()
        self.plot.hold = True  # its pictures are shown by flush_ui, with the progress
        self.progress.setFormat("starting…")
        window = getattr(self.widget.viewer, "window", None)
        if window is not None and self.plot.parent() is None:
            window.add_dock_widget(self.plot, name="Training curves", area="right")
        self.status.setText(f"starting… (run folder {run_dir})")
        self.poll_timer.start()

    # -- the client's view -------------------------------------------------------------------
    def show_status(self, text: str) -> None:
        set_text(self.status, text)

    def add_loss(self, step: int, loss: float) -> None:
        self.plot.add_loss(step, loss)  # data; the plot redraws when it can

    def add_metrics(self, step: int, metrics: dict) -> None:
        self.plot.add_metrics(step, metrics)

    def show_info(self, text: str) -> None:
        common.show_info(text)

    def show_error(self, text: str) -> None:
        common.show_error(text)

    def pending(self) -> None:
        """Show what is pending at the next ``UI_MS`` boundary (the newest event wins)."""
        if not self.flush_timer.isActive():
            since = 1000 * (time.monotonic() - self._flushed_at)
            self.flush_timer.start(int(max(0.0, UI_MS - since)))

    def finished(self) -> None:
        client = self.widget.client
        if client.loading is not None:  # Predict and Save wait for it, not for the next poll
            self.widget.registry.loading = lambda: client.loading_done(timeout=LOAD_TIMEOUT_S)
        self.preview_timer.stop()
        self.flush_ui()
        self.widget.pause.setText("Pause")
        self.widget.update_buttons()  # no Pause or Stop: nothing runs but the loader

    def publish(self, model, metadata: dict, path) -> None:
        kept = (metadata.get("kept") or {}).get("message")  # a fine-tuning's choice
        self.widget.runs.current.setText(f"current model: {path}"
                                         + (f" ({kept})" if kept else ""))
        self.widget.registry.loading = None  # loaded: whoever the publication calls uses it
        self.widget.registry.publish(model, metadata, "Train U-Net (this session)", path=path)

    def ended(self) -> None:
        self.widget.registry.loading = None
        self.poll_timer.stop()
        self.preview_apply_timer.stop()
        self.plot.hold = False
        self.plot.flush()
        try:
            self.widget.show_runs()
        except Exception as exc:
            common.show_error(common.error_message(exc))
        self.widget.update_buttons()

    # -- showing -----------------------------------------------------------------------------
    def flush_ui(self) -> None:
        """Show the newest step (progress bar) and plot picture, in one turn of the event
        loop: one repaint. A new preview is shown half-way to the next flush, in a turn of
        its own (:meth:`flush_preview`): its canvas repaint is the costliest of all (about
        40 ms in software OpenGL) and must not add to the progress bar's."""
        self.flush_timer.stop()
        self._flushed_at = time.monotonic()
        step = self.widget.client.take_step()
        try:
            if step is not None:
                self.show_step(step)
        except Exception as exc:  # from a timer: never raise into Qt
            logger.exception("showing the training's progress")
            common.show_error(common.error_message(exc))
        self.plot.render_if_stale()  # QPainter, about a millisecond; at most every PLOT_S
        self.plot.show_held()
        if self.widget.client.has_preview() and not self.preview_apply_timer.isActive():
            self.preview_apply_timer.start(UI_MS // 2)

    def flush_preview(self) -> None:
        """Show the newest preview of the child in the live prediction layer (QTimer)."""
        labels = self.widget.client.take_preview()
        if labels is None:
            return
        try:
            live.show_labels(self.widget.viewer, labels, self.preview_geometry)  # in place
            self.previews_shown += 1
        except Exception as exc:  # from a timer: never raise into Qt
            logger.exception("showing the live preview")
            common.show_error(common.error_message(exc))

    def show_step(self, event: dict) -> None:
        """The step, loss, speed and time left as the progress bar's value and text: one
        widget of fixed size repainted, never a re-layout of the dock."""
        step, total = int(event.get("step") or 0), event.get("total_steps")
        eta = f" · about {event['eta_s']:.0f} s left" if event.get("eta_s") else ""
        what = event.get("message") if step == 0 and event.get("message") else \
            f"step {step}/{total or '?'}"
        text = (f"{what} · loss {event['loss']:.4f} · "
                f"{event.get('steps_per_s') or 0:.1f} steps/s{eta}")
        bar = self.progress
        bar.setUpdatesEnabled(False)  # setValue would repaint at once: one repaint, later
        try:
            if total:
                if bar.maximum() != max(int(total), 1):
                    bar.setMaximum(max(int(total), 1))
                bar.setValue(min(step, int(total)))
            if bar.format() != text:
                bar.setFormat(text)
        finally:
            bar.setUpdatesEnabled(True)
        self.steps_shown += 1

    # -- the live preview --------------------------------------------------------------------
    def start_preview(self, run_dir) -> None:
        """With the live preview on: make its layer now (once; later previews write into it)
        and start asking the child for previews."""
        form, viewer = self.widget.form, self.widget.viewer
        self.preview_region = None
        if not form.live.isChecked() or form.data.volume_spacing() is not None:
            return  # the live preview segments a 2D region (none while a volume trains)
        image_layer = form.data.layer_pairs()[0][0]
        self._preview_pair = live.pair_index(run_dir, image_layer.name)
        found = live.visible_region(image_layer, viewer)
        if found is not None:
            self.preview_region, self.preview_geometry = found
            (r0, r1), (c0, c1) = self.preview_region
            live.show_labels(viewer, np.zeros((r1 - r0, c1 - c0), np.int32),
                             self.preview_geometry)
        self.preview_timer.start()

    def refresh_preview(self) -> bool:
        """Ask the child to segment the visible part of the image (at most 512 × 512) with
        the current model; a later poll brings the labels. False if not asked."""
        client = self.widget.client
        if not client.is_training() or client.preview_pending:
            return False
        found = live.visible_region(self.widget.form.data.layer_pairs()[0][0], self.widget.viewer)
        if found is None:
            return False
        self.preview_region, self.preview_geometry = found  # for the answer to this request
        return client.request_preview(self._preview_pair, self.preview_region)
