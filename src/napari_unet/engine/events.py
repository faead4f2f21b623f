"""Training events as JSON objects: one line per event (``napari-unet train --events``).

The same dictionaries travel over the child's stdout to the GUI
(:class:`napari_unet.engine.process.TrainingProcess`), go to a run folder's ``metrics.jsonl``
and are what :func:`event_dict` makes of a :class:`napari_unet.core.training.TrainEvent`. The line
format is documented in ``docs/training-events.md``. Pure python: importing this module imports
neither torch nor Qt.

>>> line = dumps({"kind": "step", "step": 3, "loss": 0.25, "lr": float("nan")})
>>> line
'{"kind": "step", "step": 3, "loss": 0.25, "lr": null}'
>>> loads(line)["loss"], is_terminal(loads(line))
(0.25, False)
>>> is_terminal({"kind": "done"})
True
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from napari_unet.errors import format_error, is_user_error

__all__ = [
    "KINDS",
    "PROTOCOL",
    "TERMINAL",
    "classify_error",
    "crash_event",
    "dumps",
    "error_event",
    "event_dict",
    "is_terminal",
    "loads",
    "make_event",
]

#: version of the line format; the ``started`` event carries it as ``"protocol"``
PROTOCOL = 1
#: every kind of event; ``done``, ``stopped`` and ``error`` end a session and come last
KINDS = ("started", "step", "validation", "checkpoint", "paused", "resumed", "preview",
         "kept", "done", "stopped", "error")
TERMINAL = frozenset({"done", "stopped", "error"})

_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory",
                "outofmemoryerror", "not enough memory", "memoryerror")


def _plain(value: Any) -> Any:
    """``value`` as JSON-able python: paths → str, numpy scalars/arrays → python, NaN/inf → None."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if hasattr(value, "tolist"):  # numpy scalar or array, torch tensor
        return _plain(value.tolist())
    if hasattr(value, "item"):
        return _plain(value.item())
    return str(value)


def make_event(kind: str, **fields: Any) -> dict[str, Any]:
    """An event dictionary: ``{"kind": kind, "time": <unix seconds>, **fields}``.

    >>> e = make_event("paused", step=4)
    >>> e["kind"], e["step"], isinstance(e["time"], float)
    ('paused', 4, True)
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    return {"kind": kind, "time": round(time.time(), 3), **_plain(fields)}


def event_dict(event: Any, **extra: Any) -> dict[str, Any]:
    """The dictionary of a :class:`~napari_unet.core.training.TrainEvent` (any dataclass with a
    ``kind``), plus ``extra`` fields; ``checkpoint`` events get their file as ``"path"``.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Ev:
    ...     kind: str
    ...     step: int
    ...     message: str = ""
    >>> d = event_dict(Ev("checkpoint", 10, "ckpt/last.safetensors"))
    >>> d["kind"], d["step"], d["path"]
    ('checkpoint', 10, 'ckpt/last.safetensors')
    """
    fields = dict(_plain(dataclasses.asdict(event)))
    kind = fields.pop("kind")
    if kind == "checkpoint" and fields.get("message") and "path" not in extra:
        extra["path"] = fields["message"]
    if kind == "validation" and str(fields.get("message", "")).startswith("new best: "):
        extra.setdefault("best", fields["message"][len("new best: "):])
    return make_event(kind, **fields, **extra)


def dumps(event: Mapping[str, Any]) -> str:
    """One event as one line of strict JSON (no NaN; no newline inside)."""
    return json.dumps(_plain(dict(event)), allow_nan=False, separators=(", ", ": "))


def loads(line: str) -> dict[str, Any]:
    """Parse one line of the stream; ValueError unless it is a JSON object with a ``kind``."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"line: expected a JSON object, got {line[:80]!r} ({err})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("kind"), str):
        raise ValueError(f"line: expected a JSON object with a 'kind', got {line[:80]!r}")
    return obj


def is_terminal(event: Mapping[str, Any]) -> bool:
    """True for the event that ends a session (``done``, ``stopped``, ``error``)."""
    return event.get("kind") in TERMINAL


def _smaller(settings: Mapping[str, Any] | None) -> str:
    """The concrete "smaller tile, batch or width" advice for these settings."""
    s = dict(settings or {})
    parts = []
    tile, batch, width = s.get("tile"), s.get("batch_size"), s.get("base_channels")
    if isinstance(tile, int) and tile > 60:
        parts.append(f"a smaller tile (now {tile}; e.g. --tile {max(tile // 2, 60)})")
    else:
        parts.append("a smaller tile (--tile)")
    if isinstance(batch, int) and batch > 1:
        parts.append(f"a smaller batch (now {batch}; e.g. --batch-size {max(batch // 2, 1)})")
    else:
        parts.append("a smaller batch (--batch-size)")
    if isinstance(width, int) and width > 4:
        parts.append(f"a narrower network (now {width} base channels; e.g. --base-channels "
                     f"{max(width // 2, 4)})")
    else:
        parts.append("a narrower network (--base-channels)")
    depth = s.get("depth")
    fix = "use " + ", ".join(parts[:-1]) + " or " + parts[-1]
    if isinstance(depth, int) and depth > 4:
        fix += f"; depth {depth} is deeper than the paper's 4 (--depth 4)"
    return fix


def classify_error(exc: BaseException, *, settings: Mapping[str, Any] | None = None
                   ) -> tuple[str, str]:
    """``(kind, fix)`` for an exception that ended a training.

    Kinds: ``out_of_memory`` (the fix names a smaller tile, batch or width for ``settings``),
    (also the refusal of the memory estimate before allocation, a ValueError starting with
    ``memory:``), ``diverged`` (non-finite loss), ``bad_input`` (ValueError, OSError, a command-line error),
    ``interrupted`` (KeyboardInterrupt) and ``internal`` (anything else: a bug).

    >>> classify_error(MemoryError(), settings={"tile": 572, "batch_size": 4})[0]
    'out_of_memory'
    >>> classify_error(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))[0]
    'out_of_memory'
    >>> classify_error(FloatingPointError("the loss became nan"))[0]
    'diverged'
    """
    text = f"{type(exc).__name__}: {exc}".lower()
    if isinstance(exc, MemoryError) or any(m in text for m in _OOM_MARKERS):
        return "out_of_memory", _smaller(settings)
    if isinstance(exc, ValueError) and str(exc).startswith("memory:"):
        # the estimate before allocation (core.model.check_memory) refused; its message
        # names settings that fit
        hint = str(exc).rpartition("; ")[2]
        return "out_of_memory", hint if hint != str(exc) else _smaller(settings)
    if isinstance(exc, FloatingPointError):
        return "diverged", "lower the learning rate (--lr) or check the images"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "continue the run with --resume"
    if isinstance(exc, ValueError | OSError) or type(exc).__name__ == "CLIError":
        return "bad_input", "check the message: it names the argument and what it expected"
    return "internal", "this is a bug: please report it with the log (stderr)"


def error_event(exc: BaseException, *, settings: Mapping[str, Any] | None = None,
                **fields: Any) -> dict[str, Any]:
    """The terminal ``error`` event for ``exc``: ``error`` (its kind), ``message``, ``fix``,
    ``exception`` (the type name) and ``fields`` (e.g. ``step``, ``checkpoint``).

    >>> e = error_event(MemoryError("no room"), settings={"tile": 252}, step=7)
    >>> e["kind"], e["error"], e["step"], "--tile 126" in e["fix"]
    ('error', 'out_of_memory', 7, True)
    """
    kind, fix = classify_error(exc, settings=settings)
    # the user's errors in the one line of every interface; a bug's own text, "fix" says bug
    message = format_error(exc) if is_user_error(exc) else str(exc) or type(exc).__name__
    return make_event("error", error=kind, message=message, fix=fix,
                      exception=type(exc).__name__, **fields)


def crash_event(returncode: int | None, stderr_tail: str = "", *,
                settings: Mapping[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """The synthetic ``error`` event of a child that ended without a terminal event
    (killed by a signal, or a non-zero exit status): ``error`` is ``out_of_memory`` when the
    log says so or the child was SIGKILLed (the kernel's out-of-memory killer does that),
    else ``crashed``; ``stderr`` holds the tail of its log.

    >>> e = crash_event(-9)
    >>> e["kind"], e["error"], e["returncode"], e["synthetic"]
    ('error', 'out_of_memory', -9, True)
    """
    how = _describe_exit(returncode)
    lowered = stderr_tail.lower()
    oom_log = any(m in lowered for m in _OOM_MARKERS)
    if oom_log or returncode == -9:
        kind = "out_of_memory"
        fix = _smaller(settings)
        if not oom_log:
            fix = ("if you did not kill it, the system probably ran out of memory: " + fix)
    else:
        kind = "crashed"
        fix = "see the log (stderr) below; the last checkpoint stays loadable"
    errors = [ln.strip() for ln in stderr_tail.splitlines()
              if "error" in ln.lower() and not ln.startswith(("INFO", "DEBUG"))]
    message = f"the training process {how}" + (f": {errors[-1]}" if errors else "")
    return make_event("error", error=kind, message=message, fix=fix, exception=None,
                      returncode=returncode, stderr=stderr_tail, synthetic=True, **fields)


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "closed its output"
    if returncode < 0:
        import signal

        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode} without reporting an end"


def environment_summary() -> dict[str, Any]:
    """Process facts for the ``started`` event (pid, host, python)."""
    import platform
    import sys

    return {"pid": os.getpid(), "host": platform.node(), "python": sys.version.split()[0]}
