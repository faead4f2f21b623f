"""GUI tests of "Train U-Net": the whole flow, the child process, refusals and closing."""

import os

import numpy as np
import pytest

from napari_unet.core.metrics import foreground_iou
from napari_unet.core.synthetic import synthetic_cells
from napari_unet.widgets.annotate import AnnotateWidget
from napari_unet.widgets.common import shared_models
from napari_unet.widgets.predict import PredictWidget
from napari_unet.widgets.train import TrainWidget
from napari_unet.widgets.weight_map import WEIGHT_LAYER, WeightMapWidget

pytestmark = pytest.mark.gui




def _viewer_with_cells(make_napari_viewer, shape=(96, 96), seed=0):
    viewer = make_napari_viewer()
    image, truth = synthetic_cells(shape, radius=12, seed=seed)
    viewer.add_image(image, name="cells")
    return viewer, image, truth


def test_whole_flow_annotate_weights_train_predict(make_napari_viewer, qtbot, tiny):
    viewer, _, truth = _viewer_with_cells(make_napari_viewer, (96, 96))
    annotate = AnnotateWidget(viewer)
    labels = annotate.create_labels()
    labels.data = truth.astype(np.uint16)  # "painted" programmatically
    weights = WeightMapWidget(viewer)
    weights.labels_combo.set_layer(labels)
    # border peaks between touching cells (w0 = 10) once the map of the painted cells is shown
    qtbot.waitUntil(
        lambda: WEIGHT_LAYER in viewer.layers and viewer.layers[WEIGHT_LAYER].data.max() > 5,
        timeout=15000,
    )

    train = TrainWidget(viewer)
    train.form.data.image_combo.set_layer(viewer.layers["cells"])
    train.form.data.labels_combo.set_layer(labels)
    tiny(train, 60)
    assert train.form.config().augment.elastic_sigma == 0 and train.form.config().lr == 5e-3
    train.form.live.setChecked(True)
    train.view.preview_timer.setInterval(500)
    proc = train.start_training()
    assert proc is not None
    qtbot.waitUntil(lambda: not train.is_training(), timeout=120000)
    assert train.view.plot.losses and train.view.plot.losses[-1] < train.view.plot.losses[0]
    assert train.view.plot.metrics["iou"]  # the final validation reached the plot
    assert shared_models(viewer).model is not None

    predict = PredictWidget(viewer)
    predict.image_combo.set_layer(viewer.layers["cells"])
    predict.compare_combo.set_layer(labels)
    predict.predict()
    qtbot.waitUntil(lambda: predict.worker is None, timeout=30000)
    pred = viewer.layers["cells prediction"].data
    assert foreground_iou(pred > 0, truth > 0) > 0.8
    assert predict.last_scores["iou"] > 0.8
    qtbot.waitUntil(lambda: not train.view.plot.is_rendering(), timeout=30000)
    assert train.view.plot.renders > 0 and train.view.plot.pixmap() is not None


def test_training_runs_in_a_child_process_and_second_start_is_refused(
    make_napari_viewer, qtbot, monkeypatch, tiny):
    from napari_unet.widgets import train as train_module

    viewer, _, truth = _viewer_with_cells(make_napari_viewer, (64, 64), seed=1)
    viewer.add_labels(truth, name="truth")
    train = TrainWidget(viewer)
    tiny(train, 20)
    seen = []
    monkeypatch.setattr(train_module, "show_info", seen.append)
    first = train.start_training()
    assert train.start_training() is None and "already running" in seen[0]
    assert first is not None and first.pid != os.getpid()
    qtbot.waitUntil(lambda: not train.is_training(), timeout=120000)
    assert first.started["pid"] == first.pid  # the steps ran in the child
    assert first.returncode == 0 and train.client.terminal["kind"] == "done"
    assert train.view.progress.value() == train.view.progress.maximum() == 20
    assert len(train.view.plot.losses) == 20 and train.view.plot.steps == list(range(1, 21))
    assert "done at step 20" in train.view.status.text()
    assert shared_models(viewer).model is not None


def test_pause_resume_and_closing_stops_the_child_and_keeps_the_model(make_napari_viewer, qtbot, tiny):
    viewer, _, truth = _viewer_with_cells(make_napari_viewer, (64, 64), seed=2)
    viewer.add_labels(truth, name="truth")
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train U-Net")
    tiny(train, 100_000)
    proc = train.start_training()
    qtbot.waitUntil(lambda: len(train.view.plot.losses) >= 2, timeout=120000)
    train.toggle_pause()
    assert train.pause.text() == "Resume"
    qtbot.waitUntil(lambda: "paused at step" in train.view.status.text(), timeout=60000)
    n = len(train.view.plot.losses)
    qtbot.wait(1500)  # a running child makes several steps in that time
    assert len(train.view.plot.losses) == n, "steps went on during the pause"
    train.toggle_pause()
    qtbot.waitUntil(lambda: len(train.view.plot.losses) > n, timeout=60000)
    viewer.window.remove_dock_widget(train)  # closing the widget
    assert proc.returncode is not None and not train.is_training()  # no orphan
    assert train.client.terminal["kind"] == "stopped"
    assert shared_models(viewer).model is not None  # the model is kept
    assert shared_models(viewer).metadata["training"]["step"] == train.client.terminal["step"]


def test_the_cpu_recipe_rate_follows_the_budget_until_the_user_sets_one(make_napari_viewer):
    """On a CPU the form's rate is the recipe's for the budget shown (2e-3 for the 2-minute
    Start, 1e-3 once steps and minutes both make a long run); a rate the user typed stays."""
    train = TrainWidget(make_napari_viewer())
    form = train.form
    assert form.controls["lr"].value() == pytest.approx(2e-3)
    form.controls["steps"].setValue(20_000)  # the 2 minutes still end it first
    assert form.controls["lr"].value() == pytest.approx(2e-3)
    form.controls["time_limit"].setValue(15)
    assert form.controls["lr"].value() == pytest.approx(1e-3) and form.config().lr == pytest.approx(1e-3)
    form.controls["time_limit"].setValue(2)
    assert form.controls["lr"].value() == pytest.approx(2e-3)
    form.controls["lr"].setValue(5e-3)
    form.controls["time_limit"].setValue(15)
    assert form.config().lr == pytest.approx(5e-3)


def test_training_errors_become_notifications(make_napari_viewer, monkeypatch):
    from napari_unet.widgets import common

    seen = []
    monkeypatch.setattr(common, "show_error", seen.append)
    viewer, _, _ = _viewer_with_cells(make_napari_viewer, (32, 32))
    viewer.add_labels(np.zeros((32, 32), np.uint16), name="empty")
    train = TrainWidget(viewer)
    train._on_start()
    assert seen and "no cells" in seen[0] and not train.is_training()
    train._on_save()
    assert "nothing trained" in seen[-1]
