"""The end of a GUI training and the buttons that use its model: Predict and Save pressed in
the event-loop turn in which the training ends wait for the model being loaded, instead of
"nothing trained yet" (or the model before); Use as annotation during a prediction runs when
the prediction is there."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from napari_unet.core.io import load_model, save_model
from napari_unet.core.model import UNet
from napari_unet.core.synthetic import synthetic_cells
from napari_unet.engine import child as child_module
from napari_unet.engine import client as client_module
from napari_unet.widgets import common, train_view
from napari_unet.widgets import train as train_module
from napari_unet.widgets.common import shared_models
from napari_unet.widgets.predict import PredictWidget
from napari_unet.widgets.train import TrainWidget

pytestmark = pytest.mark.gui


class FinishedChild:
    """A training child that has just ended: its ``done`` event waits to be read."""

    pid = None

    def __init__(self, model_path):
        self.queue = [{"kind": "done", "step": 3, "model": str(model_path)}]
        self.finished = True

    def poll(self):
        events, self.queue = self.queue, []
        return events

    def stop(self):
        pass


def _ended(make_napari_viewer, monkeypatch, tmp_path):
    """Train and Predict widgets on a viewer whose training child has just ended; the model
    file loads slowly (a network drive), so it is published a moment after the end event.
    (A helper, not a fixture: a fixture's value would keep the viewer alive past napari's
    leak check.)"""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"status": "running"}')
    torch.manual_seed(0)
    path = save_model(UNet(depth=1, base_channels=4).eval(), run / "model.safetensors")
    monkeypatch.setattr(child_module, "launch", lambda *a, **k: FinishedChild(path))

    def slow_load(model_path):
        time.sleep(0.5)
        return load_model(model_path)

    monkeypatch.setattr(client_module, "_load", slow_load)
    errors = []
    monkeypatch.setattr(common, "show_error", errors.append)
    viewer = make_napari_viewer()
    image, _ = synthetic_cells((64, 64), radius=10, seed=0)
    viewer.add_image(image, name="cells")
    train, predict = TrainWidget(viewer), PredictWidget(viewer)
    predict.image_combo.set_layer(viewer.layers["cells"])
    train.view.poll_timer.stop()  # the test turns the event loop's crank itself
    train.client.start(run)
    return viewer, train, predict, path, errors


def test_predict_in_the_turn_the_training_ends_uses_its_model(make_napari_viewer, monkeypatch,
                                                              tmp_path, qtbot):
    viewer, train, predict, path, errors = _ended(make_napari_viewer, monkeypatch, tmp_path)
    train.client.poll()  # the end event: the model starts loading in a worker thread
    assert shared_models(viewer).model is None and train.client.loading is not None
    predict.run_button.click()  # the same turn of the event loop
    qtbot.waitUntil(lambda: predict.worker is None, timeout=30000)
    assert errors == []
    assert "cells prediction" in viewer.layers
    assert shared_models(viewer).path == path
    assert not train.is_training()


def test_save_in_the_turn_the_training_ends_saves_its_model(make_napari_viewer, monkeypatch,
                                                            tmp_path):
    viewer, train, _predict, path, errors = _ended(make_napari_viewer, monkeypatch, tmp_path)
    older = UNet(depth=1, base_channels=4)
    shared_models(viewer).publish(older, {}, "an earlier training")
    train.client.poll()
    saved = train.save_model(tmp_path / "saved.safetensors")
    assert errors == []
    trained, _ = load_model(path)
    for key, value in load_model(saved)[0].state_dict().items():
        assert torch.equal(value, trained.state_dict()[key]), key


def test_use_as_annotation_during_a_prediction_takes_its_labels(make_napari_viewer, monkeypatch,
                                                                tmp_path, qtbot):
    viewer, train, predict, _path, errors = _ended(make_napari_viewer, monkeypatch, tmp_path)
    train.client.poll()
    predict.run_button.click()
    predict.annotate_button.click()  # while the prediction runs
    qtbot.waitUntil(lambda: predict.worker is None, timeout=30000)
    qtbot.waitUntil(lambda: any("annotation" in layer.name for layer in viewer.layers),
                    timeout=5000)
    assert errors == []
    copies = [layer for layer in viewer.layers if "annotation" in layer.name]
    assert copies and np.array_equal(copies[0].data > 0,
                                     viewer.layers["cells prediction"].data > 0)


def test_predict_while_the_model_still_loads_says_so(make_napari_viewer, monkeypatch, tmp_path,
                                                     qtbot):
    """A model that takes longer than the wait: "still loading", never "nothing trained yet";
    the next poll publishes it and Predict then uses it."""
    viewer, train, predict, path, errors = _ended(make_napari_viewer, monkeypatch, tmp_path)
    monkeypatch.setattr(train_view, "LOAD_TIMEOUT_S", 0.01)
    train.client.poll()
    predict.run_button.click()
    assert len(errors) == 1 and "still loading the trained model" in errors[0], errors
    assert predict.worker is None and shared_models(viewer).model is None
    qtbot.waitUntil(lambda: train.client.poll() is not None
                    and shared_models(viewer).model is not None, timeout=30000)
    predict.run_button.click()
    qtbot.waitUntil(lambda: predict.worker is None, timeout=30000)
    assert len(errors) == 1 and "cells prediction" in viewer.layers
    assert shared_models(viewer).path == path


def test_continue_training_in_the_turn_the_training_ends_continues_its_model(
        make_napari_viewer, monkeypatch, tmp_path):
    """Continue training pressed as the training ends: from the trained model, not "already
    running" and not the model before."""
    _viewer, train, _predict, path, errors = _ended(make_napari_viewer, monkeypatch, tmp_path)
    parents = []

    def write_run(form, registry, config, *, continue_training):
        parents.append(registry.path)
        raise ValueError("stop here: the run folder is not needed")

    monkeypatch.setattr(train_module, "write_gui_run", write_run)
    train.client.poll()
    with pytest.raises(ValueError, match="stop here"):
        train.start_training(continue_training=True)
    assert parents == [path] and errors == []
