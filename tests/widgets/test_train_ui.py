"""The Train widget keeps the GUI thread light while a child trains: the child's events are
coalesced (the newest wins, one QTimer shows them), and the final model is loaded in a worker
thread. A stand-in child feeds the events, so these tests need no training; no timing
assertions (the events are fed without processing Qt events, so no timer can fire meanwhile)."""

import threading

import numpy as np
import pytest

from napari_unet.core.io import save_model
from napari_unet.core.model import UNet
from napari_unet.core.synthetic import synthetic_cells
from napari_unet.widgets.common import shared_models
from napari_unet.widgets.train import PREVIEW_LAYER, TrainWidget

pytestmark = pytest.mark.gui


class FakeChild:
    """What the widget reads of a TrainingProcess: queued events, finished, no process."""

    pid = None
    returncode = 0
    started = None
    stderr_tail = ""

    def __init__(self):
        self.queue: list[dict] = []
        self.finished = False

    def poll(self):
        events, self.queue = self.queue, []
        return events

    def stop(self):
        pass

    def preview(self, *_):
        return False

    def close_input(self):
        pass

    def wait(self, *_):
        return 0


def _widget(make_napari_viewer):
    viewer = make_napari_viewer()
    image, truth = synthetic_cells((64, 64), radius=10, seed=0)
    viewer.add_image(image, name="cells")
    viewer.add_labels(truth, name="truth")
    return viewer, TrainWidget(viewer)


def _step(step, total=200):
    return {"kind": "step", "step": step, "total_steps": total, "loss": 1.0 / step,
            "steps_per_s": 5.0}


def _count_calls(obj, name, calls):
    method = getattr(obj, name)

    def wrapper(*args):
        calls.append((name, *args))
        return method(*args)

    setattr(obj, name, wrapper)


def test_many_step_events_are_shown_once_the_newest(make_napari_viewer, qtbot):
    _viewer, train = _widget(make_napari_viewer)
    calls = []
    for name in ("setValue", "setFormat"):
        _count_calls(train.view.progress, name, calls)
    _count_calls(train.view.status, "setText", calls)
    train.client.proc = child = FakeChild()
    for step in range(1, 201):  # 200 polls of one event each, no Qt event processed between
        child.queue.append(_step(step))
        train.client.poll()
    assert len(train.view.plot.losses) == 200  # every step reached the curve's data
    assert not calls  # nothing shown yet: the widget waits for its timer
    qtbot.waitUntil(lambda: train.view.progress.value() == 200, timeout=10000)
    assert [c for c in calls if c[0] == "setValue"] == [("setValue", 200)]  # one update
    assert len([c for c in calls if c[0] == "setFormat"]) == 1
    assert "step 200/200" in train.view.progress.format()
    assert not [c for c in calls if c[0] == "setText"]  # the status line is not re-laid out
    train.client.proc = None


def test_many_previews_update_the_one_layer_once(make_napari_viewer, qtbot, tmp_path):
    viewer, train = _widget(make_napari_viewer)
    train.client.proc = child = FakeChild()
    train.view.preview_geometry = {"translate": np.zeros(2), "scale": np.ones(2)}
    for i in range(1, 6):
        path = tmp_path / f"preview{i}.npy"
        np.save(path, np.full((64, 64), i, np.int32))
        child.queue.append({"kind": "preview", "step": i, "path": str(path)})
        train.client.poll()
    assert train.view.previews_shown == 0
    qtbot.waitUntil(lambda: train.view.previews_shown == 1, timeout=10000)
    layer = viewer.layers[PREVIEW_LAYER]
    assert (layer.data == 5).all()  # the newest preview
    # the next preview is written into the same layer, not a new one
    path = tmp_path / "preview6.npy"
    np.save(path, np.full((64, 64), 6, np.int32))
    child.queue.append({"kind": "preview", "step": 6, "path": str(path)})
    train.client.poll()
    qtbot.waitUntil(lambda: train.view.previews_shown == 2, timeout=10000)
    assert viewer.layers[PREVIEW_LAYER] is layer and (layer.data == 6).all()
    train.client.proc = None


def test_a_preview_is_shown_in_a_turn_of_its_own(make_napari_viewer, qtbot, tmp_path):
    """The progress bar and the preview's canvas repaint never fall in the same turn of the
    event loop (their costs would add up into one stall)."""
    viewer, train = _widget(make_napari_viewer)
    train.client.proc = child = FakeChild()
    train.view.preview_geometry = {"translate": np.zeros(2), "scale": np.ones(2)}
    path = tmp_path / "preview.npy"
    np.save(path, np.full((64, 64), 3, np.int32))
    child.queue.append({"kind": "step", "step": 7, "total_steps": 10, "loss": 0.5})
    child.queue.append({"kind": "preview", "step": 7, "path": str(path)})
    train.client.poll()
    train.view.flush_ui()  # what the flush timer does
    assert "step 7/10" in train.view.progress.format()
    assert train.view.previews_shown == 0  # not in the progress bar's turn
    qtbot.waitUntil(lambda: train.view.previews_shown == 1, timeout=10000)
    assert (viewer.layers[PREVIEW_LAYER].data == 3).all()
    train.client.proc = None


def test_a_preview_is_read_when_it_arrives(make_napari_viewer, qtbot, tmp_path):
    """The child's preview file is read in the poll's turn; the turn that shows it only
    writes it into the layer (its canvas repaint follows at once)."""
    viewer, train = _widget(make_napari_viewer)
    train.client.proc = child = FakeChild()
    train.view.preview_geometry = {"translate": np.zeros(2), "scale": np.ones(2)}
    path = tmp_path / "preview.npy"
    np.save(path, np.full((64, 64), 4, np.int32))
    child.queue.append({"kind": "preview", "step": 3, "path": str(path)})
    train.client.poll()
    path.unlink()  # the child may write the next one there
    qtbot.waitUntil(lambda: train.view.previews_shown == 1, timeout=10000)
    assert (viewer.layers[PREVIEW_LAYER].data == 4).all()
    train.client.proc = None


def test_a_preview_in_place_redraws_the_canvas_not_the_layer_list(make_napari_viewer):
    """napari's layer list repaints (a window composition of its own) at every change of a
    layer that it hears of; a preview changes nothing it shows."""
    from napari_unet.widgets import live

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="cells")
    geometry = {"translate": np.zeros(2), "scale": np.ones(2)}
    layer = live.show_labels(viewer, np.zeros((32, 32), np.int32), geometry)
    heard, drawn = [], []
    viewer.layers.events.connect(lambda event: heard.append(event.type))
    layer.events.set_data.connect(lambda event: drawn.append(event.type))
    new = np.arange(32 * 32, dtype=np.int32).reshape(32, 32) % 5
    assert live.show_labels(viewer, new, geometry) is layer
    assert np.array_equal(layer.data, new)
    assert drawn == ["set_data"]  # the canvas's node is told
    assert heard == []  # the layer list is not
    layer.name = "renamed"  # and it hears of later changes again
    assert "name" in heard


def test_the_final_model_is_loaded_off_the_gui_thread(
    make_napari_viewer, qtbot, tmp_path, monkeypatch):
    import gc

    from napari_unet.core.io import model_file as io
    from napari_unet.engine import child as child_module

    threads = []
    real_load = io.load_model

    def load_model(*args, **kwargs):
        threads.append(threading.current_thread())
        return real_load(*args, **kwargs)

    monkeypatch.setattr(io, "load_model", load_model)
    viewer, train = _widget(make_napari_viewer)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model_path = save_model(UNet(depth=1, base_channels=2), run_dir / "model.safetensors",
                            training={"step": 4})
    child = FakeChild()
    monkeypatch.setattr(child_module, "launch", lambda *a, **k: child)
    train.form.live.setChecked(False)
    assert gc.get_freeze_count() == 0
    assert train.start_run(run_dir, nproc=1) is child
    # while it trains, napari's objects are out of the collector's sight (no full collection)
    assert gc.get_freeze_count() > 0
    child.queue.append(_step(4, total=4))
    child.queue.append({"kind": "done", "step": 4, "model": str(model_path)})
    child.finished = True
    train.client.poll()
    # the child has ended; until the loader thread has the model, the training is not over
    assert train.client.proc is None and train.is_training()
    assert not train.pause.isEnabled() and not train.stop.isEnabled()
    qtbot.waitUntil(lambda: not train.is_training(), timeout=30000)
    assert threads and all(t is not threading.main_thread() for t in threads)
    registry = shared_models(viewer)
    assert registry.model is not None and registry.path == model_path
    assert registry.metadata["training"]["step"] == 4
    assert str(model_path) in train.runs.current.text()
    assert "done at step 4" in train.view.status.text() and train.view.progress.value() == 4
    assert not train.view.poll_timer.isActive()
    assert gc.get_freeze_count() == 0  # the collector as it was


def test_previews_are_shown_as_16_bit_labels(make_napari_viewer, qtbot, tmp_path):
    """The child's int32 preview is shown as uint16 (napari maps 32-bit labels on the GUI
    thread at every refresh); the values are kept."""
    viewer, train = _widget(make_napari_viewer)
    train.client.proc = child = FakeChild()
    train.view.preview_geometry = {"translate": np.zeros(2), "scale": np.ones(2)}
    preview = np.arange(64 * 64, dtype=np.int32).reshape(64, 64) % 300
    np.save(tmp_path / "p.npy", preview)
    child.queue.append({"kind": "preview", "step": 1, "path": str(tmp_path / "p.npy")})
    train.client.poll()
    qtbot.waitUntil(lambda: train.view.previews_shown == 1, timeout=10000)
    layer = viewer.layers[PREVIEW_LAYER]
    assert layer.data.dtype == np.uint16 and np.array_equal(layer.data, preview)
    train.client.proc = None
