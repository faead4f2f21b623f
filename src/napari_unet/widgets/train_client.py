"""The Train widget's client side of the training child: events, control, Save, live preview.

:class:`ChildClient` is mixed into :class:`napari_unet.widgets.train.TrainWidget`; it reads the
child's JSON-line events from a QTimer (:meth:`ChildClient.poll`, never blocking), turns them
into the plot, progress bar, status, notifications and the published model, and sends Pause,
Resume, Stop, checkpoint (Save) and preview requests as control lines.

The GUI thread does as little as it can while a training runs: every visible change costs a
repaint (and, with napari's OpenGL canvas in the window, a composition of the whole window).
So the events only store the latest step, preview and plot picture; one single-shot QTimer
(:meth:`ChildClient.flush_ui`, at most every ``UI_MS``) shows the newest step and picture
together, in one repaint, and a change that would not change the text is skipped; a new
preview is shown half-way to the next flush (:meth:`ChildClient.flush_preview`), so that its
canvas repaint never adds to the progress bar's. At the end, the child's
model file is loaded in a worker thread and published on the GUI thread when it is there.
"""

from __future__ import annotations

import concurrent.futures
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from napari_unet.engine import child
from napari_unet.widgets import live
from napari_unet.widgets.common import error_message, show_error, show_info

logger = logging.getLogger(__name__)

#: ms between two updates of what a training shows (progress bar and plot picture together in
#: one repaint; a new live preview half-way between two, in a repaint of its own): the newest
#: of each. Every repaint composes napari's whole window (15-20 ms in Xvfb's software OpenGL,
#: 30-40 ms with the canvas): one a second alone would hold the GUI thread in 1 % of a 10 ms
#: timer's ticks (BENCHMARKS.md, twelfth session)
UI_MS = 2000
#: seconds between two pictures of the training curves while training (QPainter, GUI thread)
PLOT_S = 2.0

_loader: concurrent.futures.ThreadPoolExecutor | None = None


def load_in_background(path) -> concurrent.futures.Future:
    """Load the model file ``path`` in a worker thread (one for all widgets); the future's
    result is ``(model, metadata)`` as :func:`napari_unet.core.io.load_model` returns them."""
    global _loader
    if _loader is None:
        _loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="napari-unet-load")
    return _loader.submit(_load, path)


def _load(path):
    from napari_unet.core.io.model_file import load_model

    return load_model(path)


def freeze_gc() -> bool:
    """Move every object napari has made so far out of the garbage collector's sight
    (:func:`gc.freeze`) while a training runs: a full collection of napari's heap costs the
    GUI thread 0.3-0.8 s, a collection of what is new since Start a few ms. Acyclic garbage
    is still freed at once; :func:`unfreeze_gc` (at the end) restores the collector. False
    (nothing done) when something else froze objects already."""
    import gc

    if gc.get_freeze_count():
        return False
    gc.freeze()
    return True


def unfreeze_gc(frozen: bool) -> None:
    import gc

    if frozen:
        gc.unfreeze()


def set_text(widget, text: str) -> None:
    """``widget.setText(text)`` unless it shows that already (no repaint, no re-layout)."""
    if widget.text() != text:
        widget.setText(text)


class ChildClient:
    """Methods of the Train widget that talk to its training child (``self.proc``)."""

    def toggle_pause(self):
        if self.proc is None:
            raise ValueError("Pause: nothing is training; press Start first")
        if self.pause.text() == "Pause":
            self.proc.pause()
            self.pause.setText("Resume")
        else:
            self.proc.resume()
            self.pause.setText("Pause")

    def stop_training(self, *, wait: bool = False, timeout: float = 60.0) -> None:
        """Ask the child to stop at the next step (it writes its model); with ``wait``, block
        until it has ended (stdin closed, then SIGTERM, then SIGKILL: never an orphan) and
        its model is published."""
        if self.proc is None:
            if wait and self._loading is not None:
                self._loading_done(timeout=timeout)
            return
        if not wait:
            self.proc.stop()
            self.status.setText("stopping at the next step…")
            return
        child.shutdown(self.proc, timeout=timeout)
        self.poll()  # the last events; the model file goes to the loader
        if self._loading is not None:
            self._loading_done(timeout=timeout)

    # ------------------------------------------------------------------ events of the child
    def poll(self):
        """Handle the child's events read so far (QTimer, never blocks); returns them. After
        the child has ended: publish the model once its loader has it."""
        if self._loading is not None:
            if self._loading.done():
                self._loading_done()
            return []
        if self.proc is None:
            return []
        events = self.proc.poll()
        for event in events:
            try:
                self._on_event(event)
            except Exception as exc:  # a bad event must not stop the polling
                logger.exception("event %s", event.get("kind"))
                show_error(error_message(exc))
        if self._last_step is not None or self._preview_event is not None:
            self._schedule_flush()
        if self.proc is not None and self.proc.finished and self.terminal is not None:
            self._on_finished()
        return events

    def _schedule_flush(self):
        """Show what is pending at the next ``UI_MS`` boundary (the newest event wins)."""
        if not self._flush_timer.isActive():
            since = 1000 * (time.monotonic() - self._flushed_at)
            self._flush_timer.start(int(max(0.0, UI_MS - since)))

    def flush_ui(self):
        """Show the newest step (progress bar) and plot picture, in one turn of the event
        loop: one repaint. A new preview is shown half-way to the next flush, in a turn of
        its own (:meth:`flush_preview`): its canvas repaint is the costliest of all (about
        40 ms in software OpenGL) and must not add to the progress bar's."""
        self._flush_timer.stop()
        self._flushed_at = time.monotonic()
        step, self._last_step = self._last_step, None
        try:
            if step is not None:
                self._show_step(step)
        except Exception as exc:  # from a timer: never raise into Qt
            logger.exception("showing the training's progress")
            show_error(error_message(exc))
        self.plot.render_if_stale()  # QPainter, about a millisecond; at most every PLOT_S
        self.plot.show_held()
        if self._preview_event is not None and not self._preview_apply_timer.isActive():
            self._preview_apply_timer.start(UI_MS // 2)

    def flush_preview(self):
        """Show the newest preview of the child in the live prediction layer (QTimer)."""
        preview, self._preview_event = self._preview_event, None
        if preview is None:
            return
        try:
            self._apply_preview(*preview)
        except Exception as exc:  # from a timer: never raise into Qt
            logger.exception("showing the live preview")
            show_error(error_message(exc))

    def _show_step(self, event: dict):
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

    def _on_event(self, event: dict):
        kind, step = event["kind"], int(event.get("step") or 0)
        if kind == "step" and event.get("loss") is not None:
            if step > 0:  # step 0: the 2D pre-training of a 3D U-Net, not on the 3D curve
                self.plot.add_loss(step, event["loss"])  # data; the plot redraws when it can
            self._last_step = event
        elif kind == "started":
            set_text(self.status, f"training on {event.get('device')}"
                                  f" ({event.get('world_size', 1)} process(es))")
        elif kind == "validation" and event.get("metrics"):
            self.plot.add_metrics(step, event["metrics"])
        elif kind == "paused":
            set_text(self.status, f"paused at step {step}: press Resume")
        elif kind == "resumed":
            set_text(self.status, f"training (resumed at step {step})")
        elif kind == "checkpoint" and event.get("requested") and self._pending_saves:
            for path in self._pending_saves:
                shutil.copyfile(event["path"], path)
                show_info(f"Model (step {step}) saved to {path}")
            self._pending_saves = []
        elif kind == "preview":
            self._show_preview(event)
        elif kind in ("done", "stopped"):
            self.terminal = event
            self.flush_ui()
            self.status.setText(f"{kind} at step {step}: {event.get('model')}")
        elif kind == "error":
            self.terminal = event
            self.flush_ui()
            self.status.setText(f"training failed at step {step}: {event.get('message')}")
            show_error(f"Training failed: {event.get('message')}. Fix: {event.get('fix')}. "
                       f"The run folder keeps the last checkpoint: {self.run_dir}")

    def _on_finished(self):
        """The child has ended: its model file (done/stopped) goes to the loader thread, the
        poll timer waits for it (:meth:`_loading_done` publishes it); the run stays listed."""
        from napari_unet.engine.runs import run_model_path, set_status

        self._preview_timer.stop()
        terminal, self.proc = self.terminal, None
        self.flush_ui()
        self.pause.setText("Pause")
        try:
            if terminal.get("kind") == "error":
                if terminal.get("synthetic"):  # killed: the child could not say so itself
                    set_status(self.run_dir, "error")
            else:
                path = run_model_path(self.run_dir)
                if path is None:
                    raise ValueError(f"the training wrote no model into {self.run_dir}")
                self._loading, self._loading_path = load_in_background(path), path
                self._update_buttons()  # no Pause or Stop: nothing runs but the loader
                return  # the poll timer goes on until the model is loaded
        except Exception as exc:
            show_error(error_message(exc))
        self._end_training()

    def _loading_done(self, *, timeout: float | None = None):
        """Publish the model the loader thread read (or report why it could not)."""
        future, path, self._loading = self._loading, self._loading_path, None
        try:
            model, metadata = future.result(timeout)
            self.runs.current.setText(f"current model: {path}")
            self.registry.publish(model, metadata, "Train U-Net (this session)", path=path)
        except Exception as exc:
            show_error(error_message(exc))
        self._end_training()

    def _end_training(self):
        unfreeze_gc(self._gc_frozen)
        self._gc_frozen = False
        self._poll_timer.stop()
        self._preview_apply_timer.stop()
        self._preview_event = None
        self.plot.hold = False
        self.plot.flush()
        try:
            self._show_runs()
        except Exception as exc:
            show_error(error_message(exc))
        self._update_buttons()

    # ------------------------------------------------------------------ live preview
    def _start_preview(self, run_dir):
        """With the live preview on: make its layer now (once; later previews write into it)
        and start asking the child for previews."""
        self._preview_region = None
        if not self.form.live.isChecked() or self.form.volume_spacing() is not None:
            return  # the live preview segments a 2D region (none while a volume trains)
        image_layer = self.form.layer_pairs()[0][0]
        self._preview_pair = live.pair_index(run_dir, image_layer.name)
        found = live.visible_region(image_layer, self.viewer)
        if found is not None:
            self._preview_region, self._preview_geometry = found
            (r0, r1), (c0, c1) = self._preview_region
            live.show_labels(self.viewer, np.zeros((r1 - r0, c1 - c0), np.int32),
                              self._preview_geometry)
        self._preview_timer.start()

    def refresh_preview(self) -> bool:
        """Ask the child to segment the visible part of the image (at most 512 × 512) with
        the current model; the ``preview`` event updates the layer. False if not asked."""
        if not self.is_training() or self._preview_pending:
            return False
        found = live.visible_region(self.form.layer_pairs()[0][0], self.viewer)
        if found is None:
            return False
        self._preview_region, self._preview_geometry = found  # for the answer to this request
        self._preview_pending = self.proc.preview(self._preview_pair, self._preview_region)
        return self._preview_pending

    def _show_preview(self, event: dict):
        """A preview of the child: kept (the newest wins) for the next :meth:`flush_ui`."""
        self._preview_pending = False
        if not event.get("path"):
            logger.info("preview refused: %s", event.get("error"))
            return
        # read now, in the poll's turn: the turn that shows it (and repaints the canvas right
        # after, 30-40 ms in software OpenGL) then only writes it into the layer
        self._preview_event = (np.load(event["path"]), self._preview_geometry)

    def _apply_preview(self, labels, geometry):
        live.show_labels(self.viewer, labels, geometry)  # in place: one layer refresh
        self.previews_shown += 1

    # ------------------------------------------------------------------ files
    def save_model(self, path) -> Path:
        """Save the current model to ``path``. During training the child writes a checkpoint
        at the next step boundary and the file is copied when it names it (a notification
        says so); otherwise the published model (the last training's, or a reloaded run's)."""
        from napari_unet.core.io.model_file import save_model

        self._check_trained()
        if self.is_training():
            self._pending_saves.append(Path(path))
            self.proc.request_checkpoint()
            return Path(path)
        return Path(save_model(self.registry.model, path, **self.registry.metadata))

    def _check_trained(self) -> None:
        if not self.is_training() and self.registry.model is None:
            raise ValueError("Save model: nothing trained yet; press Start first")
