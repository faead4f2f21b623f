"""The Train widget's client of the training child, without Qt: a stand-in child feeds the
events and a recording view stands for the widget."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from napari_unet.core.io import save_model
from napari_unet.core.model import UNet
from napari_unet.engine import child as child_module
from napari_unet.engine.client import TrainingClient


class FakeChild:
    """What the client reads of a TrainingProcess: queued events, finished, control lines."""

    pid = None

    def __init__(self):
        self.queue: list[dict] = []
        self.finished = False
        self.sent: list[str] = []

    def poll(self):
        events, self.queue = self.queue, []
        return events

    def pause(self):
        self.sent.append("pause")

    def resume(self):
        self.sent.append("resume")

    def stop(self):
        self.sent.append("stop")

    def request_checkpoint(self):
        self.sent.append("checkpoint")
        return True

    def preview(self, pair, region):
        self.sent.append(f"preview {pair}")
        return True


class View:
    """Records what the client asks to show."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, *args))

    def named(self, name):
        return [c[1:] for c in self.calls if c[0] == name]


@pytest.fixture
def client(monkeypatch, tmp_path):
    child = FakeChild()
    monkeypatch.setattr(child_module, "launch", lambda *a, **k: child)
    view = View()
    client = TrainingClient(view)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"status": "running"}')
    assert client.start(run) is child and client.is_training()
    yield client, child, view
    if gc.get_freeze_count():
        gc.unfreeze()


def _step(step):
    return {"kind": "step", "step": step, "total_steps": 100, "loss": 1.0 / step}


def test_every_loss_reaches_the_curve_and_only_the_newest_step_is_shown(client):
    client, child, view = client
    for step in range(1, 51):
        child.queue.append(_step(step))
        client.poll()
    assert len(view.named("add_loss")) == 50
    assert client.take_step()["step"] == 50 and client.take_step() is None
    assert view.named("pending")  # the view was told something waits


def test_pause_stop_save_and_preview_are_control_lines(client, tmp_path):
    client, child, view = client
    assert client.toggle_pause() is True and client.toggle_pause() is False
    client.save(tmp_path / "copy.safetensors")
    assert client.request_preview(0, ((0, 8), (0, 8)))
    assert not client.request_preview(0, ((0, 8), (0, 8)))  # one request at a time
    client.stop()
    assert child.sent == ["pause", "resume", "checkpoint", "preview 0", "stop"]
    assert view.named("show_status")[-1] == ("stopping at the next step…",)


def test_a_saved_checkpoint_is_copied_and_a_preview_read_when_it_arrives(client, tmp_path):
    client, child, view = client
    ckpt = save_model(UNet(depth=1, base_channels=2), tmp_path / "last.safetensors")
    client.save(tmp_path / "copy.safetensors")
    np.save(tmp_path / "p.npy", np.full((8, 8), 3, np.int32))
    child.queue += [{"kind": "checkpoint", "step": 2, "path": str(ckpt), "requested": True},
                    {"kind": "preview", "step": 2, "path": str(tmp_path / "p.npy")}]
    client.poll()
    (tmp_path / "p.npy").unlink()  # the child may write the next one there
    assert (tmp_path / "copy.safetensors").is_file() and view.named("show_info")
    assert client.has_preview() and (client.take_preview() == 3).all()


def test_the_model_is_loaded_in_the_background_and_published(client):
    client, child, view = client
    path = save_model(UNet(depth=1, base_channels=2), client.run_dir / "model.safetensors",
                      training={"step": 3})
    child.queue.append({"kind": "done", "step": 3, "model": str(path)})
    child.finished = True
    client.poll()
    assert client.proc is None and client.is_training()  # the loader has the file
    client.loading.result(timeout=30)
    client.poll()
    (_model, metadata, published), = view.named("publish")
    assert published == path and metadata["training"]["step"] == 3
    assert not client.is_training() and view.named("ended") and gc.get_freeze_count() == 0


def test_an_error_event_is_reported_with_its_fix(client):
    client, child, view = client
    child.queue.append({"kind": "error", "step": 5, "message": "out of memory",
                        "fix": "a smaller tile", "synthetic": True})
    child.finished = True
    client.poll()
    (text,), = view.named("show_error")
    assert "out of memory" in text and "a smaller tile" in text
    assert '"error"' in (client.run_dir / "run.json").read_text()
    assert not client.is_training() and view.named("finished") and view.named("ended")
