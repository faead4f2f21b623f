"""The Train widget's side of a training child process (no Qt here).

Start writes a run folder; :func:`launch` trains it with
``python -m napari_unet train --run DIR --events - --control -`` through
:class:`napari_unet.engine.process.TrainingProcess` (under ``torchrun`` for several GPUs), at a
lower CPU priority so that the GUI thread always finds a core. :func:`shutdown` ends a child
without leaving an orphan: stdin closed (it stops at the next step and writes its model), then
SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import logging
import os
import sys

from napari_unet.engine.process import TrainingProcess

logger = logging.getLogger(__name__)

#: niceness of the training child (Linux/macOS): the GUI thread wins the cores
CHILD_NICE = 10


def launch(run_dir, *, device: str = "auto", nproc: int = 1, env=None) -> TrainingProcess:
    """Start the child that trains ``run_dir`` as written; returns the started process."""
    if nproc > 1 and device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"GPUs: {nproc} processes need device auto, cpu or cuda, got {device!r}")
    # torchrun's parser would read "--run" as an abbreviation of its own --run-path
    args = ["--run" if nproc == 1 else "--run-folder", str(run_dir), "--device", device]
    env = dict(os.environ if env is None else env)
    if nproc > 1 and device == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")  # several CPU processes share the cores
    proc = TrainingProcess(args, nproc=nproc, env=env).start()
    lower_priority(proc.pid)
    return proc


def lower_priority(pid: int | None, nice: int = CHILD_NICE) -> bool:
    """Raise the niceness of ``pid`` (its threads started later inherit it); False where it
    cannot be done."""
    if pid is None or not hasattr(os, "setpriority") or sys.platform == "win32":
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, pid, max(os.getpriority(os.PRIO_PROCESS, pid), nice))
        return True
    except OSError as exc:  # pragma: no cover - platform dependent
        logger.debug("could not lower the training child's priority: %s", exc)
        return False


def shutdown(proc: TrainingProcess, *, timeout: float = 60.0) -> int | None:
    """End ``proc`` and wait for it: close its stdin (a stop: it writes its last checkpoint and
    the model), SIGTERM after ``timeout`` s, SIGKILL 10 s later. Returns the exit status."""
    if proc.pid is None:
        return None
    proc.close_input()
    code = proc.wait(timeout)
    if code is None:
        logger.warning("training process %s did not stop in %g s: SIGTERM", proc.pid, timeout)
        proc.terminate()
        code = proc.wait(10.0)
    if code is None:
        logger.warning("training process %s ignored SIGTERM: SIGKILL", proc.pid)
        proc.kill()
        code = proc.wait(10.0)
    return code
