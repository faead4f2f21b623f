"""Launch and drive ``napari-unet train`` in a child process (no Qt, no torch at import).

The Train widget is a client of the command line's engine: it starts the child with
``--events - --control -``, reads its JSON-line events without blocking (a reader thread fills
a queue; :meth:`TrainingProcess.poll` drains it, e.g. from a QTimer) and sends control lines.
When the child ends, its memory (GPU included) goes with it; a crash (non-zero exit status
without a terminal event, SIGKILL) becomes a synthetic ``error`` event carrying the tail of
its stderr, so the caller always receives exactly one terminal event, last.

>>> proc = TrainingProcess(["--images", "img/", "--labels", "lab/", "--out", "m.safetensors"])
>>> proc.command[1:4], proc.command[-4:]
(['-m', 'napari_unet', 'train'], ['--events', '-', '--control', '-'])
>>> TrainingProcess(["--out", "m.safetensors"], nproc=2).command[1:6]
['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', '-m']

With ``nproc > 1`` the child is ``torchrun`` and N training processes (the DDP path of
``napari-unet train``; rank 0 writes the events and reads the control lines).
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from napari_unet.engine import events as ev

__all__ = ["TrainingProcess"]

logger = logging.getLogger(__name__)

_DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
              "ROLE_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")
_POSIX = os.name == "posix"


class TrainingProcess:
    """A ``napari-unet train`` child process and its event stream.

    Parameters
    ----------
    args : list of str
        The arguments of ``napari-unet train`` (``--images ... --labels ... --out ...``);
        ``--events -`` and ``--control -`` are added unless given.
    nproc : int
        Training processes: 1 runs ``python -m napari_unet train``; more run
        ``python -m torch.distributed.run --standalone --nproc_per_node=N -m napari_unet train``.
    env : mapping, optional
        The child's environment (default: this process's); torchrun's variables of an outer
        launch are removed, ``PYTHONUNBUFFERED=1`` is set.
    cwd : path, optional
        The child's working directory.
    stderr_lines : int
        How many lines of the child's stderr :attr:`stderr_tail` keeps.
    """

    def __init__(self, args: Sequence[str], *, nproc: int = 1,
                 env: Mapping[str, str] | None = None, cwd=None, stderr_lines: int = 200):
        if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
            raise ValueError(f"nproc: expected a positive integer, got {nproc!r}")
        args = [str(a) for a in args]
        if args[:1] == ["train"]:
            args = args[1:]
        if "--events" not in args:
            args += ["--events", "-"]
        if "--control" not in args:
            args += ["--control", "-"]
        if nproc == 1:
            head = [sys.executable, "-m", "napari_unet", "train"]
        else:
            head = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={nproc}", "-m", "napari_unet", "train"]
        #: the full command line of the child
        self.command: list[str] = head + args
        self.nproc = nproc
        self.cwd = cwd
        env = dict(os.environ if env is None else env)
        for var in _DIST_VARS:
            env.pop(var, None)
        env["PYTHONUNBUFFERED"] = "1"
        self.env = env
        self._proc: subprocess.Popen | None = None
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=stderr_lines)
        self._threads: list[threading.Thread] = []
        self._write_lock = threading.Lock()
        #: the terminal event once it has been read (``done``, ``stopped`` or ``error``)
        self.terminal: dict[str, Any] | None = None
        #: the ``started`` event once read (resolved settings, device)
        self.started: dict[str, Any] | None = None
        self._finished = threading.Event()

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> TrainingProcess:
        """Start the child (once); returns self."""
        if self._proc is not None:
            raise RuntimeError("start: this TrainingProcess was already started")
        self._proc = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self.env, cwd=self.cwd, text=True, encoding="utf-8", errors="replace",
            bufsize=1, start_new_session=_POSIX,
        )
        logger.info("training process %d: %s", self._proc.pid, " ".join(self.command))
        err = threading.Thread(target=self._read_stderr, name="napari-unet-train-stderr",
                               daemon=True)
        out = threading.Thread(target=self._read_stdout, args=(err,),
                               name="napari-unet-train-events", daemon=True)
        self._threads = [err, out]
        err.start()
        out.start()
        return self

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: killed by that signal); None while running."""
        return None if self._proc is None else self._proc.poll()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def stderr_tail(self) -> str:
        """The last lines the child wrote to stderr (its log), for error reports."""
        return "".join(list(self._stderr))

    @property
    def finished(self) -> bool:
        """True once the terminal event is in the queue (the child has ended or will)."""
        return self._finished.is_set()

    def poll(self) -> list[dict[str, Any]]:
        """The events read since the last call (never blocks); the terminal event comes last."""
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the child to end and its events to be read; its exit status, or None if
        it is still running after ``timeout`` seconds."""
        if self._proc is None:
            raise RuntimeError("wait: the process was not started")
        if not self._finished.wait(timeout):
            return None
        return self._proc.wait()

    # -- control -----------------------------------------------------------------------------
    def pause(self) -> bool:
        """Ask the child to pause before its next step (answered by a ``paused`` event)."""
        return self._send("pause")

    def resume(self) -> bool:
        return self._send("resume")

    def stop(self) -> bool:
        """Stop at the next step; the child writes the last checkpoint and the model."""
        return self._send("stop")

    def request_checkpoint(self) -> bool:
        """Ask for ``last.safetensors`` at the next step boundary (at once while paused); a
        ``checkpoint`` event with ``"requested": true`` tells when it is on disk."""
        return self._send("checkpoint")

    def preview(self, pair: int, region) -> bool:
        """Ask the child to segment ``region`` (``((y0, y1), (x0, x1))``) of its data image
        ``pair`` with the current model; a ``preview`` event names the labels file (.npy)."""
        (y0, y1), (x0, x1) = region
        return self._send(f"preview {int(pair)} {int(y0)} {int(y1)} {int(x0)} {int(x1)}")

    def close_input(self) -> None:
        """Close the child's stdin: it stops as if told ``stop`` (what a dying parent does)."""
        with self._write_lock:
            if self._proc is not None and self._proc.stdin and not self._proc.stdin.closed:
                try:
                    self._proc.stdin.close()
                except OSError:
                    pass

    def _send(self, line: str) -> bool:
        """Write one control line; False when the child is gone."""
        with self._write_lock:
            if self._proc is None:
                raise RuntimeError(f"{line}: the process was not started")
            stdin = self._proc.stdin
            if stdin is None or stdin.closed or self._proc.poll() is not None:
                return False
            try:
                stdin.write(line + "\n")
                stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                return False
            return True

    def terminate(self) -> None:
        """SIGTERM (the child writes a last checkpoint and exits, see ``napari-unet train``)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the child (and, under torchrun, its training processes)."""
        if self._proc is None:
            return
        sig = getattr(signal, "SIGKILL", signal.SIGTERM)
        workers = _children(self._proc.pid) if self.nproc > 1 else []
        self._signal(sig)
        for pid in workers:  # torchrun starts its workers in sessions of their own
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def _signal(self, sig) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        try:
            self._proc.send_signal(sig)
        except ProcessLookupError:
            pass

    # -- readers -------------------------------------------------------------------------------
    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line)
            logger.debug("child: %s", line.rstrip())

    def _read_stdout(self, stderr_reader: threading.Thread) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            for line in self._proc.stdout:
                if not line.strip():
                    continue
                try:
                    event = ev.loads(line)
                except ValueError:  # not an event: keep it with the log
                    self._stderr.append(line)
                    continue
                if self.terminal is not None:
                    continue  # nothing after the terminal event
                if event["kind"] == "started":
                    self.started = event
                if ev.is_terminal(event):
                    self.terminal = event
                self._events.put(event)
        finally:
            code = self._proc.wait()
            stderr_reader.join(timeout=5.0)
            if self.terminal is None:  # killed, or crashed before it could report
                settings = (self.started or {}).get("settings")
                self.terminal = ev.crash_event(code, self.stderr_tail, settings=settings)
                self._events.put(self.terminal)
            self._finished.set()


def _children(pid: int) -> list[int]:
    """The descendants of ``pid`` (Linux /proc, or psutil where installed)."""
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except Exception:
        pass
    parents: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out
