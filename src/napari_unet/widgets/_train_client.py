"""The Train widget's client side of the training child: events, control, Save, live preview.

:class:`ChildClient` is mixed into :class:`napari_unet.widgets.train.TrainWidget`; it reads the
child's JSON-line events from a QTimer (:meth:`ChildClient.poll`, never blocking), turns them
into the plot, progress bar, status, notifications and the published model, and sends Pause,
Resume, Stop, checkpoint (Save) and preview requests as control lines.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np

from napari_unet.widgets import _child, _live
from napari_unet.widgets._common import error_message, show_error, show_info

logger = logging.getLogger(__name__)

#: seconds between two updates of the status text and progress bar (each costs the GUI thread
#: a repaint of the window)
STATUS_S = 0.5


class ChildClient:
    """Methods of the Train widget that talk to its training child (``self.proc``)."""

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
        now = time.monotonic()
        if self._last_step is not None and (now - self._shown_at >= STATUS_S or self.terminal):
            self._show_step(self._last_step)  # the text and bar: a few times a second
            self._last_step, self._shown_at = None, now
        if self.proc is not None and self.proc.finished and self.terminal is not None:
            self._on_finished()
        return events

    def _show_step(self, event: dict):
        step, total = int(event.get("step") or 0), event.get("total_steps")
        if total:
            self.progress.setMaximum(max(int(total), 1))
            self.progress.setValue(min(step, int(total)))
        eta = f", about {event['eta_s']:.0f} s left" if event.get("eta_s") else ""
        self.status.setText(f"step {step}/{total or '?'}: loss {event['loss']:.4f}, "
                            f"{event.get('steps_per_s') or 0:.1f} steps/s{eta}")

    def _on_event(self, event: dict):
        kind, step = event["kind"], int(event.get("step") or 0)
        if kind == "step" and event.get("loss") is not None:
            self.plot.add_loss(step, event["loss"])  # data; the plot redraws when it can
            self._last_step = event
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
            if self._last_step is not None:
                self._show_step(self._last_step)
                self._last_step = None
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

    # ------------------------------------------------------------------ live preview
    def _start_preview(self, run_dir):
        """With the live preview on: make its layer now (once; later previews write into it)
        and start asking the child for previews."""
        self._preview_region = None
        if not self.form.live.isChecked() or self.form.volume_spacing() is not None:
            return  # the live preview segments a 2D region (none while a volume trains)
        image_layer = self.form.layer_pairs()[0][0]
        self._preview_pair = _live.pair_index(run_dir, image_layer.name)
        found = _live.visible_region(image_layer, self.viewer)
        if found is not None:
            self._preview_region, self._preview_geometry = found
            (r0, r1), (c0, c1) = self._preview_region
            _live.show_labels(self.viewer, np.zeros((r1 - r0, c1 - c0), np.int32),
                              self._preview_geometry)
        self._preview_timer.start()

    def refresh_preview(self) -> bool:
        """Ask the child to segment the visible part of the image (at most 512 × 512) with
        the current model; the ``preview`` event updates the layer. False if not asked."""
        if not self.is_training() or self._preview_pending:
            return False
        found = _live.visible_region(self.form.layer_pairs()[0][0], self.viewer)
        if found is None:
            return False
        self._preview_region, self._preview_geometry = found  # for the answer to this request
        self._preview_pending = self.proc.preview(self._preview_pair, self._preview_region)
        return self._preview_pending

    def _show_preview(self, event: dict):
        self._preview_pending = False
        if not event.get("path"):
            logger.info("preview refused: %s", event.get("error"))
            return
        _live.show_labels(self.viewer, np.load(event["path"]), self._preview_geometry)
        self.previews_shown += 1

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
