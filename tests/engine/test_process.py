"""TrainingProcess: ``napari-unet train`` in a child process, driven over stdin, read over stdout.

Each test starts a real child (tiny network and image, one CPU thread); the waits are generous
and nothing asserts a duration.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from napari_unet.core.io import load_model
from napari_unet.engine.process import TrainingProcess

TINY = ["--depth", "2", "--base-channels", "4", "--tile", "60", "--dropout", "0",
        "--validate-every", "0", "--device", "cpu"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")
WAIT = 180.0


@pytest.fixture(scope="module")
def data(tmp_path_factory, write_cell_folders):
    root = tmp_path_factory.mktemp("child")
    write_cell_folders(root)
    return root


class Client:
    """A started TrainingProcess and every event it has delivered so far."""

    def __init__(self, data, out, *extra, nproc=1):
        self.proc = TrainingProcess(
            ["--images", str(data / "img"), "--labels", str(data / "lab"), "--out", str(out),
             *TINY, "--steps", "100000", *extra], nproc=nproc, env=ENV, cwd=data).start()
        self.events: list[dict] = []

    def kinds(self):
        return [e["kind"] for e in self.events]

    def until(self, predicate, what):
        end = time.monotonic() + WAIT
        while True:
            self.events += self.proc.poll()
            if predicate():
                return
            if time.monotonic() > end or (self.proc.finished and not self.proc._events.qsize()):
                self.events += self.proc.poll()
                if predicate():
                    return
                self.proc.kill()
                raise AssertionError(f"waiting for {what}: {self.kinds()[-20:]}\n"
                                     f"{self.proc.stderr_tail[-3000:]}")
            time.sleep(0.02)

    def steps(self):
        return [e["step"] for e in self.events if e["kind"] == "step"]

    def until_step(self, n):
        self.until(lambda: any(s >= n for s in self.steps()), f"step {n}")

    def end(self):
        assert self.proc.wait(WAIT) is not None, "the child did not end"
        self.events += self.proc.poll()
        kinds = self.kinds()
        assert kinds[0] == "started" and sum(k in ("done", "stopped", "error")
                                             for k in kinds) == 1
        return self.events[-1]


def test_pause_stops_steps_checkpoint_is_written_and_stop_keeps_the_model(data, tmp_path):
    out = tmp_path / "m.safetensors"
    c = Client(data, out)
    c.until_step(2)
    assert c.proc.pause()
    c.until(lambda: "paused" in c.kinds(), "paused")
    n = len(c.steps())
    time.sleep(1.5)  # a running child makes several steps in that time
    c.events += c.proc.poll()
    assert len(c.steps()) == n, "steps went on during the pause"
    # a checkpoint while paused: written at once, of the paused model
    assert c.proc.request_checkpoint()
    c.until(lambda: "checkpoint" in c.kinds(), "checkpoint")
    ckpt = next(e for e in c.events if e["kind"] == "checkpoint")
    assert ckpt["requested"] is True and ckpt["step"] == c.steps()[-1]
    assert os.path.isabs(ckpt["path"])  # paths in events are absolute
    _, meta = load_model(ckpt["path"])
    assert meta["training"]["step"] == ckpt["step"]
    assert c.proc.resume()
    c.until(lambda: "resumed" in c.kinds(), "resumed")
    c.until_step(c.steps()[-1] + 2)
    # a checkpoint request while training: at the next step boundary
    assert c.proc.request_checkpoint()
    c.until(lambda: c.kinds().count("checkpoint") == 2, "second checkpoint")
    assert c.proc.stop()
    last = c.end()
    assert last["kind"] == "stopped" and last["reason"] == "requested"
    assert c.proc.returncode == 0
    _, meta = load_model(out)
    assert meta["training"]["step"] == last["step"] == c.steps()[-1]
    load_model(last["checkpoint"])


def test_sigkill_gives_an_error_event_and_the_last_checkpoint_loads(data, tmp_path):
    c = Client(data, tmp_path / "m.safetensors")
    c.until_step(2)
    c.proc.request_checkpoint()
    c.until(lambda: "checkpoint" in c.kinds(), "checkpoint")
    c.proc.kill()
    last = c.end()
    assert c.proc.returncode == -9
    assert last["kind"] == "error" and last["synthetic"] is True
    assert last["error"] == "out_of_memory" and "SIGKILL" in last["message"]
    assert "training on cpu" in last["stderr"]  # the log's tail comes with it
    assert not c.proc.pause() and not c.proc.stop()  # the child is gone: no exception
    path = next(e for e in c.events if e["kind"] == "checkpoint")["path"]
    load_model(path)


def test_end_of_input_stops_and_keeps_the_model(data, tmp_path):
    out = tmp_path / "m.safetensors"
    c = Client(data, out)
    c.until_step(1)
    c.proc.close_input()  # what the parent's death does to the pipe
    last = c.end()
    assert last["kind"] == "stopped" and last["reason"] == "end of input"
    assert load_model(out)[1]["training"]["step"] == last["step"]


def test_terminate_writes_the_last_checkpoint(data, tmp_path):
    out = tmp_path / "m.safetensors"
    c = Client(data, out)
    c.until_step(2)
    c.proc.terminate()
    last = c.end()
    assert last["kind"] == "stopped", last
    path = last["checkpoint"]
    assert load_model(path)[1]["training"]["step"] >= 2


def test_two_processes_under_torchrun_report_once_and_stop(data, tmp_path):
    out = tmp_path / "ddp.safetensors"
    c = Client(data, out, "--batch-size", "2", nproc=2)
    c.until_step(2)
    started = c.events[0]
    assert started["kind"] == "started" and started["world_size"] == 2
    c.proc.stop()
    last = c.end()
    assert last["kind"] == "stopped" and c.proc.returncode == 0, c.proc.stderr_tail[-3000:]
    steps = c.steps()
    assert steps == list(range(1, len(steps) + 1))  # rank 0 alone reports
    assert load_model(out)[1]["training"]["step"] == last["step"]


def test_preview_request_writes_labels_of_the_region_and_names_them(data, tmp_path):
    c = Client(data, tmp_path / "m.safetensors")
    c.until_step(1)
    assert c.proc.preview(1, ((4, 40), (8, 48)))  # a step boundary
    c.until(lambda: "preview" in c.kinds(), "preview")
    first = next(e for e in c.events if e["kind"] == "preview")
    assert first["pair"] == 1 and first["region"] == [[4, 40], [8, 48]] and first["step"] >= 1
    labels = np.load(first["path"])
    assert labels.shape == (36, 40) and labels.dtype == np.int32
    assert os.path.dirname(first["path"]) == str(tmp_path / "m.checkpoints")
    c.proc.pause()
    c.until(lambda: "paused" in c.kinds(), "paused")
    c.proc._send('{"cmd": "preview", "pair": 0, "region": [[0, 48], [0, 48]]}')  # at once
    c.until(lambda: c.kinds().count("preview") == 2, "preview while paused")
    assert np.load(c.events[-1]["path"]).shape == (48, 48)
    c.proc.preview(0, ((0, 480), (0, 48)))  # outside the image: refused, training goes on
    c.until(lambda: c.kinds().count("preview") == 3, "refused preview")
    bad = c.events[-1]
    assert bad["path"] is None and "not inside the 48x48 image" in bad["error"]
    c.proc.stop()
    assert c.end()["kind"] == "stopped"
