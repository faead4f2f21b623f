"""``napari-unet train --events/--control``: the JSON-lines stream and the stdin control.

:class:`TrainSession` sits between the command's loop and the :class:`~napari_unet.core.training.Trainer`:
it writes every event as one JSON line (:mod:`napari_unet.engine.events`; format in
``docs/training-events.md``), reads ``pause``/``resume``/``stop``/``checkpoint``/``preview`` lines from
stdin in a background thread and serves checkpoint and preview requests at the next step
boundary (or at once while paused; the preview itself is :mod:`napari_unet.engine.preview`), and guarantees that the last line is a terminal event (``done``, ``stopped`` or
``error``), exceptions included. Without ``--events`` and ``--control`` it does nothing.

Under ``torchrun`` only rank 0 writes events and reads control: the other ranks get an inert
session and follow rank 0's decisions through the trainer's broadcast.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from napari_unet.engine import events as ev

__all__ = ["COMMANDS", "TrainSession"]

logger = logging.getLogger(__name__)

#: the lines ``--control`` understands
COMMANDS = ("pause", "resume", "stop", "checkpoint", "preview")


class TrainSession:
    """Event stream and control channel of one ``napari-unet train`` (see the module docstring).

    Parameters
    ----------
    events : "-", a file path or None
        Where the JSON lines go: ``-`` is stdout (everything else the command prints then goes
        to stderr, so stdout carries JSON only), a path a file (overwritten), None nowhere.
    control : "-" or None
        ``-`` reads control lines from stdin; end of input (the parent is gone) means stop.
    active : bool
        False (ranks other than 0) makes the session inert.
    """

    def __init__(self, *, events: str | None = None, control: str | None = None,
                 active: bool = True, control_stream=None):
        self.events = events if active else None
        self.control = control if active else None
        if self.control not in (None, "-"):
            raise ValueError(f"--control: expected '-' (stdin), got {control!r}")
        self._stream = None
        self._saved_stdout = None
        self._lock = threading.RLock()
        self._ended = False
        self.trainer = None
        self.settings: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self._want_pause = self._paused = self._want_ckpt = False
        self._want_preview = None  # (pair, region) of the newest preview request
        self._final: Any = None  # the trainer's done/stopped event, held for finish()
        if self.events == "-":
            self._stream, self._saved_stdout = sys.stdout, sys.stdout
            sys.stdout = sys.stderr  # stdout carries JSON lines only
        elif self.events is not None:
            path = Path(self.events)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = open(path, "w", buffering=1, encoding="utf-8")
        if self.control is not None:
            self._reader = threading.Thread(
                target=self._read_control, args=(control_stream or sys.stdin,),
                name="napari-unet-control", daemon=True)
            self._reader.start()

    @classmethod
    def from_args(cls, args, *, active: bool = True) -> TrainSession:
        return cls(events=getattr(args, "events", None), control=getattr(args, "control", None),
                   active=active)

    # -- the stream ------------------------------------------------------------------------------
    def emit(self, event: dict[str, Any]) -> None:
        """Write one event line (nothing after the terminal event)."""
        with self._lock:
            if self._ended:
                logger.debug("event after the end dropped: %s", event.get("kind"))
                return
            self._ended = ev.is_terminal(event)
            if self._stream is None:
                return
            try:
                self._stream.write(ev.dumps(event) + "\n")
                self._stream.flush()
            except (BrokenPipeError, ValueError):  # the reader is gone: stop training
                self._stream = None
                logger.warning("events: the reading process is gone; stopping")
                self.request_stop("output closed")

    # -- control ---------------------------------------------------------------------------------
    def _read_control(self, stream) -> None:
        try:
            for line in stream:
                cmd = line.strip()
                if cmd:
                    self.command(cmd)
        except (OSError, ValueError) as err:
            logger.warning("control: stdin failed (%s); stopping", err)
        else:
            logger.info("control: end of input (the parent is gone); stopping")
        self.request_stop("end of input")

    def command(self, line: str) -> None:
        """Act on one control line (thread-safe)."""
        cmd = line.strip().lower()
        with self._lock:
            if cmd.startswith(("preview", "{")):
                self._request_preview(line)
            elif cmd == "stop":
                self.request_stop("requested")
            elif cmd == "pause":
                self._want_pause = True
                if self.trainer is not None:
                    self.trainer.request_pause()
            elif cmd == "resume":
                self._resume()
            elif cmd == "checkpoint":
                if self._paused:
                    self._write_checkpoint(requested=True)
                else:
                    self._want_ckpt = True
            else:
                logger.warning("control: unknown command %r (expected one of %s)", cmd,
                               ", ".join(COMMANDS))

    def _request_preview(self, line: str) -> None:
        from napari_unet.engine.preview import parse_preview

        try:
            self._want_preview = parse_preview(line)
        except ValueError as err:
            logger.warning("control: %s", err)
            self.emit(ev.make_event("preview", step=self._step(), path=None, error=str(err)))
            return
        if self._paused:
            self._write_preview()

    def _write_preview(self) -> None:
        """Compute the requested preview now; the caller holds the lock at a step boundary or
        while paused. A bad region is answered by a ``preview`` event with ``error``."""
        from napari_unet.engine.preview import write_preview

        (pair, region), self._want_preview = self._want_preview, None
        fields = {"step": self._step(), "pair": pair, "region": region}
        if self.trainer is None:
            return
        try:
            path = write_preview(self.trainer, pair, region,
                                 getattr(self.trainer.config, "checkpoint_dir", None))
        except ValueError as err:
            self.emit(ev.make_event("preview", path=None, error=str(err), **fields))
            return
        self.emit(ev.make_event("preview", path=_abs(path), **fields))

    def request_stop(self, reason: str) -> None:
        """Stop at the next step, e.g. from a signal handler; ``reason`` goes to ``stopped``."""
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
            self._want_pause = self._paused = False
            if self.trainer is not None:
                self.trainer.request_stop()

    def _resume(self) -> None:
        if not self._want_pause:
            return
        self._want_pause = False
        if self.trainer is not None:
            self.trainer.request_resume()
        if self._paused:
            self._paused = False
            self.emit(ev.make_event("resumed", step=self._step()))

    def _step(self) -> int | None:
        return None if self.trainer is None else int(self.trainer.step)

    def _write_checkpoint(self, *, requested: bool) -> None:
        """Write ``last`` now; the caller holds the lock at a step boundary or while paused."""
        self._want_ckpt = False
        path = self.trainer.save_checkpoint() if self.trainer is not None else None
        if path is not None:
            self.emit(ev.make_event("checkpoint", step=self._step(), path=_abs(path),
                                    requested=requested))

    # -- the run ---------------------------------------------------------------------------------
    def started(self, trainer, *, model: str | Path | None = None, **extra: Any) -> None:
        """Attach the trainer (pending pause/stop requests apply now) and emit ``started``."""
        m = trainer.model
        arch = {"in_channels": m.in_channels, "num_classes": m.num_classes, "depth": m.depth,
                "base_channels": m.base_channels, "padding": m.padding}
        self.settings = {**trainer.metadata()["training"], **arch}
        cfg = trainer.config
        with self._lock:
            self.emit(ev.make_event(
                "started", protocol=ev.PROTOCOL, step=trainer.step, total_steps=cfg.steps,
                time_limit=cfg.time_limit, device=str(trainer.device),
                world_size=trainer.world_size, settings=self.settings, architecture=arch,
                out_tile=trainer.out_tile, images=len(trainer.pairs), model=_abs(model),
                checkpoint_dir=_abs(cfg.checkpoint_dir), cwd=os.getcwd(),
                **ev.environment_summary(), **extra))
            self.trainer = trainer
            if self.stop_reason is not None:
                trainer.request_stop()
            elif self._want_pause:
                trainer.request_pause()

    def drive(self, trainer):
        """``trainer.run()``, every event written as it passes; ``done``/``stopped`` are held
        back for :meth:`finish` (the model file is written after them)."""
        if self.trainer is None:
            self.trainer = trainer
        run = trainer.run()
        try:
            for event in run:
                if event.kind in ("done", "stopped"):
                    self._final = event
                    yield event
                    continue
                with self._lock:
                    if event.kind == "paused":
                        self.emit(ev.event_dict(event))
                        if self._want_pause:
                            self._paused = True
                        else:  # resumed before the trainer got to its pause
                            self.emit(ev.make_event("resumed", step=self._step()))
                        if self._want_ckpt:
                            self._write_checkpoint(requested=True)
                        if self._want_preview is not None:
                            self._write_preview()
                    elif event.kind == "checkpoint":
                        requested, self._want_ckpt = self._want_ckpt, False
                        self.emit(ev.event_dict(event, path=_abs(event.message),
                                                requested=requested))
                    else:
                        self.emit(_absolute_best(ev.event_dict(event)))
                        if self._want_ckpt:  # a step boundary: the generator is suspended
                            self._write_checkpoint(requested=True)
                        if self._want_preview is not None and event.kind == "step":
                            self._write_preview()
                yield event
        finally:
            run.close()

    def finish(self, status: str, *, model: str | Path | None = None,
               metrics: dict | None = None) -> None:
        """The terminal event: ``done``, or ``stopped`` (also for ``interrupted``)."""
        final = self._final
        fields: dict[str, Any] = {"model": _abs(model), "metrics": metrics}
        if self.trainer is not None:
            t = self.trainer
            fields.update(step=t.step, total_steps=t.config.steps, elapsed_s=round(t.elapsed, 3),
                          checkpoint=self._last_checkpoint())
        if final is not None:
            fields.update(loss=final.loss, steps_per_s=final.steps_per_s, message=final.message)
        if status == "done":
            self.emit(ev.make_event("done", **fields))
        else:
            reason = "interrupted" if status == "interrupted" else (self.stop_reason or status)
            self.emit(ev.make_event("stopped", reason=reason, **fields))

    def fail(self, exc: BaseException) -> None:
        """The terminal ``error`` event for an exception that ends the command."""
        if self._ended:
            return
        fields: dict[str, Any] = {}
        if self.trainer is not None:
            fields.update(step=self.trainer.step, checkpoint=self._last_checkpoint())
        self.emit(ev.error_event(exc, settings=self.settings, **fields))

    def fallback_settings(self, args) -> None:
        """Settings for an error's fix before the trainer exists (from the arguments)."""
        if not self.settings:
            tile = getattr(args, "tile", None)
            if isinstance(tile, list | tuple) and len(tile) == 1:
                tile = tile[0]  # one side: an int, as in 2D
            self.settings = {"tile": tile,
                             "batch_size": getattr(args, "batch_size", None),
                             "base_channels": getattr(args, "base_channels", None),
                             "depth": getattr(args, "depth", None)}

    def _last_checkpoint(self) -> str | None:
        d = getattr(self.trainer.config, "checkpoint_dir", None)
        path = None if d is None else Path(d) / "last.safetensors"
        return _abs(path) if path is not None and path.is_file() else None

    def close(self) -> None:
        """End the stream: a terminal event is written if none was (the last line always is)."""
        if not self._ended:
            self.emit(ev.make_event("error", error="internal", exception=None, step=self._step(),
                                    message="the training ended without reporting an end",
                                    fix="this is a bug: please report it with the log (stderr)"))
        if self._saved_stdout is not None:
            sys.stdout = self._saved_stdout
            self._saved_stdout = None
        if self._stream is not None and self.events != "-":
            self._stream.close()
        self._stream = None


def _abs(path) -> str | None:
    """Paths in events are absolute: the reader's working directory may differ."""
    return None if path is None or path == "" else str(Path(path).absolute())


def _absolute_best(event: dict[str, Any]) -> dict[str, Any]:
    if event.get("best"):
        event["best"] = _abs(event["best"])
    return event
