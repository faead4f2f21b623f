"""The Train widget's side of a training child, without Qt: a client a view renders.

:class:`TrainingClient` starts the child that trains a run folder (:mod:`napari_unet.engine.
child`), reads its JSON-line events without blocking (:meth:`TrainingClient.poll`, e.g. from a
timer), keeps only the newest step and preview for the view to show, sends Pause, Resume, Stop,
checkpoint (Save) and preview requests as control lines, and at the end loads the child's model
file in a worker thread and hands it to the view. The view (the Train widget) implements
:class:`ClientView`; a test can drive the client with any object that does.

While a training runs the garbage collector is kept off napari's objects (:func:`freeze_gc`):
a full collection of napari's heap costs the GUI thread 0.3-0.8 s, a collection of what is
new since Start a few ms.
"""

from __future__ import annotations

import concurrent.futures
import logging
import shutil
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from napari_unet.engine import child

__all__ = ["ClientView", "TrainingClient", "freeze_gc", "load_in_background", "unfreeze_gc"]

logger = logging.getLogger(__name__)

_loader: concurrent.futures.ThreadPoolExecutor | None = None


def load_in_background(path) -> concurrent.futures.Future:
    """Load the model file ``path`` in a worker thread (one for all clients); the future's
    result is ``(model, metadata)`` as :func:`napari_unet.core.io.load_model` returns them."""
    global _loader
    if _loader is None:
        _loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="napari-unet-load")
    return _loader.submit(_load, path)


def _load(path):
    from napari_unet.core.io.model_file import load_model

    return load_model(path)


def freeze_gc() -> bool:
    """Move every object made so far out of the garbage collector's sight (:func:`gc.freeze`);
    acyclic garbage is still freed at once; :func:`unfreeze_gc` restores the collector. False
    (nothing done) when something else froze objects already."""
    import gc

    if gc.get_freeze_count():
        return False
    gc.freeze()
    return True


def unfreeze_gc(frozen: bool) -> None:
    """Undo :func:`freeze_gc` when it froze the collector (``frozen``: what it returned)."""
    import gc

    if frozen:
        gc.unfreeze()


class ClientView(Protocol):
    """What a :class:`TrainingClient` asks its view to show."""

    def show_status(self, text: str) -> None: ...
    def add_loss(self, step: int, loss: float) -> None: ...
    def add_metrics(self, step: int, metrics: dict) -> None: ...
    def show_info(self, text: str) -> None: ...
    def show_error(self, text: str) -> None: ...
    def pending(self) -> None:
        """A step or a preview waits to be shown (:meth:`TrainingClient.take_step`)."""
    def finished(self) -> None:
        """The child has ended (its last events are handled)."""
    def publish(self, model, metadata: dict, path: Path) -> None: ...
    def ended(self) -> None:
        """The training is over: the model was published, or could not be."""


class TrainingClient:
    """A training child, its events and its model (see the module docstring).

    ``proc`` is the :class:`~napari_unet.engine.process.TrainingProcess` (None when none
    runs); ``terminal`` the last training's ``done``, ``stopped`` or ``error`` event.
    """

    def __init__(self, view: ClientView):
        self.view = view
        self.proc = None
        self.run_dir: Path | None = None
        self.terminal: dict[str, Any] | None = None
        #: the ``kept`` event's line of the last training (a fine-tuning), else None
        self.kept: str | None = None
        self.paused = False
        self.pending_saves: list[Path] = []
        self.preview_pending = False
        self._step: dict | None = None  # the newest step event not shown yet
        self._preview: np.ndarray | None = None  # the newest preview labels not shown yet
        self.loading: concurrent.futures.Future | None = None
        self.loading_path: Path | None = None
        self._gc_frozen = False

    def is_training(self) -> bool:
        """True from :meth:`start` until the child has ended and its model is published."""
        return self.proc is not None or self.loading is not None

    def start(self, run_dir, *, device: str = "auto", nproc: int = 1):
        """Start the child that trains ``run_dir`` as written; returns the process."""
        from napari_unet.engine.runs import set_status

        run_dir = Path(run_dir)
        frozen = freeze_gc()
        try:
            proc = child.launch(run_dir, device=device, nproc=nproc)
        except Exception:
            unfreeze_gc(frozen)
            set_status(run_dir, "error")
            raise
        self.proc, self.run_dir, self.terminal, self.paused = proc, run_dir, None, False
        self.kept = None
        self._gc_frozen = frozen
        self.pending_saves, self.preview_pending = [], False
        self._step = self._preview = None
        return proc

    # -- control -------------------------------------------------------------------------------
    def toggle_pause(self) -> bool:
        """Pause or resume the child; returns whether it is now paused."""
        if self.proc is None:
            raise ValueError("Pause: nothing is training; press Start first")
        if self.paused:
            self.proc.resume()
        else:
            self.proc.pause()
        self.paused = not self.paused
        return self.paused

    def stop(self, *, wait: bool = False, timeout: float = 60.0) -> None:
        """Ask the child to stop at the next step (it writes its model); with ``wait``, block
        until it has ended (stdin closed, then SIGTERM, then SIGKILL: never an orphan) and
        its model is published."""
        if self.proc is None:
            if wait and self.loading is not None:
                self.loading_done(timeout=timeout)
            return
        if not wait:
            self.proc.stop()
            self.view.show_status("stopping at the next step…")
            return
        child.shutdown(self.proc, timeout=timeout)
        self.poll()  # the last events; the model file goes to the loader
        if self.loading is not None:
            self.loading_done(timeout=timeout)

    def save(self, path) -> Path:
        """Copy the model of the next step boundary to ``path`` (the child writes a checkpoint;
        a notification says when it is copied)."""
        self.pending_saves.append(Path(path))
        self.proc.request_checkpoint()
        return Path(path)

    def request_preview(self, pair: int, region) -> bool:
        """Ask the child to segment ``region`` of its data image ``pair`` (unless a request is
        still pending); the labels come with a later :meth:`poll`."""
        if self.proc is None or self.preview_pending:
            return False
        self.preview_pending = self.proc.preview(pair, region)
        return self.preview_pending

    def take_step(self) -> dict | None:
        """The newest step event not shown yet (then forgotten)."""
        step, self._step = self._step, None
        return step

    def has_preview(self) -> bool:
        """Whether preview labels wait to be shown."""
        return self._preview is not None

    def take_preview(self) -> np.ndarray | None:
        """The newest preview labels not shown yet (then forgotten)."""
        preview, self._preview = self._preview, None
        return preview

    # -- events --------------------------------------------------------------------------------
    def poll(self) -> list[dict]:
        """Handle the child's events read so far (never blocks); returns them. After the
        child has ended: publish the model once its loader has it."""
        if self.loading is not None:
            if self.loading.done():
                self.loading_done()
            return []
        if self.proc is None:
            return []
        events = self.proc.poll()
        for event in events:
            try:
                self._on_event(event)
            except Exception as exc:  # a bad event must not stop the polling
                logger.exception("event %s", event.get("kind"))
                self.view.show_error(f"{type(exc).__name__}: {exc}")
        if self._step is not None or self._preview is not None:
            self.view.pending()
        if self.proc is not None and self.proc.finished and self.terminal is not None:
            self._on_finished()
        return events

    def _on_event(self, event: dict) -> None:
        kind, step = event["kind"], int(event.get("step") or 0)
        view = self.view
        if kind == "step" and event.get("loss") is not None:
            if step > 0:  # step 0: the 2D pre-training of a 3D U-Net, not on the 3D curve
                view.add_loss(step, event["loss"])
            self._step = event
        elif kind == "started":
            view.show_status(f"training on {event.get('device')} "
                             f"({event.get('world_size', 1)} process(es))")
        elif kind == "validation" and event.get("metrics"):
            view.add_metrics(step, event["metrics"])
        elif kind == "paused":
            view.show_status(f"paused at step {step}: press Resume")
        elif kind == "resumed":
            view.show_status(f"training (resumed at step {step})")
        elif kind == "checkpoint" and event.get("requested") and self.pending_saves:
            for path in self.pending_saves:
                shutil.copyfile(event["path"], path)
                view.show_info(f"Model (step {step}) saved to {path}")
            self.pending_saves = []
        elif kind == "preview":
            self._on_preview(event)
        elif kind == "kept":  # a fine-tuning's previous or trained model: shown with done
            self.kept = event.get("message") or None
        elif kind in ("done", "stopped"):
            self.terminal = event
            kept = f"; {self.kept}" if self.kept and kind == "done" else ""
            view.show_status(f"{kind} at step {step}: {event.get('model')}{kept}")
        elif kind == "error":
            self.terminal = event
            view.show_status(f"training failed at step {step}: {event.get('message')}")
            view.show_error(f"Training failed: {event.get('message')}. Fix: "
                            f"{event.get('fix')}. The run folder keeps the last checkpoint: "
                            f"{self.run_dir}")

    def _on_preview(self, event: dict) -> None:
        """A preview of the child: read now (the newest wins) for the view's next show."""
        self.preview_pending = False
        if not event.get("path"):
            logger.info("preview refused: %s", event.get("error"))
            return
        self._preview = np.load(event["path"])

    def _on_finished(self) -> None:
        """The child has ended: its model file (done/stopped) goes to the loader thread (a
        later :meth:`poll` publishes it); the run stays listed."""
        from napari_unet.engine.runs import run_model_path, set_status

        terminal, self.proc, self.paused = self.terminal, None, False
        try:
            if terminal.get("kind") == "error":
                if terminal.get("synthetic"):  # killed: the child could not say so itself
                    set_status(self.run_dir, "error")
            else:
                path = run_model_path(self.run_dir)
                if path is None:
                    raise ValueError(f"the training wrote no model into {self.run_dir}")
                self.loading, self.loading_path = load_in_background(path), path
                self.view.finished()
                return  # the polling goes on until the model is loaded
        except Exception as exc:
            self.view.show_error(f"{type(exc).__name__}: {exc}")
        self.view.finished()
        self._end()

    def loading_done(self, *, timeout: float | None = None) -> None:
        """Publish the model the loader thread read (or report why it could not). Past
        ``timeout`` seconds it is still loading: a later :meth:`poll` publishes it."""
        future, path = self.loading, self.loading_path
        if future is None:  # published already (a call made while it was being published)
            return
        concurrent.futures.wait([future], timeout)
        if not future.done():
            logger.info("still loading the trained model %s", path)
            return
        try:
            model, metadata = future.result()
        except Exception as exc:
            self.loading = None
            self.view.show_error(f"{type(exc).__name__}: {exc}")
        else:
            self.loading = None
            self.view.publish(model, metadata, path)
        self._end()

    def _end(self) -> None:
        unfreeze_gc(self._gc_frozen)
        self._gc_frozen = False
        self._preview = None
        self.view.ended()
