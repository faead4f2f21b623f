"""GUI tests of the correct-and-retrain loop: run folders, closing mid-training, Continue
training from the current weights, run listing and reload, Save and the live preview from the
training child."""

import json
import os

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.core.io import load_model
from napari_unet.core.synthetic import synthetic_cells
from napari_unet.core.training import Trainer
from napari_unet.engine.runs import read_run, run_model_path
from napari_unet.engine.training import config_from_settings
from napari_unet.widgets.common import shared_models
from napari_unet.widgets.model_choice import TRAINED
from napari_unet.widgets.predict import PredictWidget
from napari_unet.widgets.train import PREVIEW_LAYER, TrainWidget

pytestmark = pytest.mark.gui




def _train(widget, qtbot, *, cont=False):
    proc = widget.continue_training() if cont else widget.start_training()
    assert proc is not None
    qtbot.waitUntil(lambda: not widget.is_training(), timeout=120000)
    return widget.client.run_dir


def _first_param(model) -> torch.Tensor:
    return next(iter(model.state_dict().values())).detach().clone()


def test_every_training_is_a_run_folder_and_runs_can_be_reloaded(
    make_napari_viewer, qtbot, _runs_in_tmp, tiny):
    viewer = make_napari_viewer()
    image, truth = synthetic_cells((64, 64), radius=10, seed=0)
    viewer.add_image(image, name="cells")
    viewer.add_labels(truth, name="truth")
    train = TrainWidget(viewer)
    tiny(train, 6)
    first = _train(train, qtbot)
    assert first.parent == _runs_in_tmp  # the default root ($NAPARI_UNET_RUNS)
    record = json.loads((first / "run.json").read_text())
    assert record["status"] == "done" and record["parent_model"] is None
    np.testing.assert_array_equal(tifffile.imread(first / record["data"][0]["labels"]), truth)
    assert record["data"][0]["sha256"]["labels"]
    assert (first / "last.safetensors").is_file() and (first / "settings.json").is_file()
    kinds = [json.loads(line)["kind"] for line in (first / "metrics.jsonl").open()]
    assert kinds.count("step") == 6 and kinds[-1] == "done"
    first_weights = _first_param(shared_models(viewer).model)

    root = _runs_in_tmp.parent / "elsewhere"
    train.form.runs_root.setText(str(root))  # the location is changeable
    tiny(train, 3)
    train.form.controls["steps"].setValue(3)
    second = _train(train, qtbot)
    assert second.parent == root
    assert train.runs.list.count() == 2  # this viewer's runs, with their steps
    assert "6 steps" in train.runs.list.item(0).text()
    assert "3 steps" in train.runs.list.item(1).text()
    assert not torch.equal(_first_param(shared_models(viewer).model), first_weights)

    train.runs.list.setCurrentRow(0)
    path = train.reload_run()  # roll back to the first run
    assert path == run_model_path(first) and shared_models(viewer).path == path
    assert torch.equal(_first_param(shared_models(viewer).model), first_weights)


def test_closing_the_viewer_mid_training_leaves_a_loadable_model(make_napari_viewer, qtbot, tiny):
    viewer = make_napari_viewer()
    image, truth = synthetic_cells((64, 64), radius=10, seed=2)
    viewer.add_image(image, name="cells")
    viewer.add_labels(truth, name="truth")
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train U-Net")
    tiny(train, 100_000)
    proc = train.start_training()
    qtbot.waitUntil(lambda: len(train.view.plot.losses) >= 3, timeout=120000)
    run_dir = train.client.run_dir
    viewer.window._qt_window.close()  # the user closes napari
    assert proc.returncode == 0 and not train.is_training()  # stopped, no orphan
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)
    _, meta = load_model(run_model_path(run_dir))
    assert meta["training"]["step"] >= 3
    load_model(run_dir / "last.safetensors")
    pairs, _, record = read_run(run_dir)  # the annotations are on disk, hashes intact
    np.testing.assert_array_equal(pairs[0].labels, truth)
    assert record["status"] == "stopped"


def test_use_as_annotation_and_continue_training_start_from_the_current_weights(
    make_napari_viewer, qtbot, tiny):
    viewer = make_napari_viewer()
    image1, truth1 = synthetic_cells((96, 96), radius=12, seed=0)
    image2, truth2 = synthetic_cells((96, 96), radius=12, seed=1)
    viewer.add_image(image1, name="one")
    viewer.add_labels(truth1, name="truth one")
    viewer.add_image(image2, name="two")
    train = TrainWidget(viewer)
    train.form.data.image_combo.set_layer(viewer.layers["one"])
    train.form.data.labels_combo.set_layer(viewer.layers["truth one"])
    tiny(train, 40)
    first = _train(train, qtbot)
    current = _first_param(shared_models(viewer).model)

    predict = PredictWidget(viewer)
    predict.image_combo.set_layer(viewer.layers["two"])
    assert predict.predict() is not None
    qtbot.waitUntil(lambda: predict.worker is None, timeout=30000)
    annotation = predict.use_as_annotation()
    assert annotation is not viewer.layers["two prediction"]
    cell = np.argwhere(truth2 == truth2.max())[0]  # the user corrects one cell
    annotation.selected_label = int(annotation.data.max()) + 1
    annotation.brush_size = 9
    annotation.paint(tuple(cell), annotation.selected_label)

    train.form.data.image_combo.set_layer(viewer.layers["two"])
    train.form.data.labels_combo.set_layer(annotation)
    train.form.controls["steps"].setValue(1)
    second = _train(train, qtbot, cont=True)
    record = json.loads((second / "run.json").read_text())
    assert record["parent_model"] == str(first / "model.safetensors")
    assert [d["name"] for d in record["data"]] == ["one", "two"]  # all pairs so far
    # never worse after a round: which model the round delivers, in the run folder and a line
    kinds = [json.loads(line)["kind"] for line in (second / "metrics.jsonl").open()]
    assert kinds[-2:] == ["kept", "done"]
    assert "kept the " in train.runs.current.text()
    assert load_model(second / "model.safetensors")[1]["kept"]["kept"] in ("previous", "trained")
    pairs, _, _ = read_run(second)
    np.testing.assert_array_equal(pairs[1].labels, annotation.data)
    after = _first_param(load_model(second / "model.safetensors")[0])
    _, settings, _ = read_run(second)
    fresh = _first_param(Trainer(pairs, config_from_settings(settings)).model)
    # one AdamW step (lr 5e-3) away from the current weights, much closer than a fresh start
    far = (fresh - current).abs().max()
    assert far > 0.02 and (after - current).abs().max() < 0.3 * far
    assert predict.models.source.currentText() == TRAINED
    assert predict.models.model()[0] is shared_models(viewer).model  # the next image: the newest model


def test_preview_and_save_come_from_the_child(make_napari_viewer, qtbot, tmp_path, tiny):
    viewer = make_napari_viewer()
    image, truth = synthetic_cells((64, 64), radius=10, seed=3)
    viewer.add_image(image, name="cells")
    viewer.add_labels(truth, name="truth")
    train = TrainWidget(viewer)
    tiny(train, 100_000)
    train.form.live.setChecked(True)
    train.view.preview_timer.setInterval(200)
    train.start_training()
    layer = viewer.layers[PREVIEW_LAYER]  # made at Start, filled by the child's previews
    assert layer.data.ndim == 2 and layer.data.dtype == np.uint16 and layer.data.shape[0] <= 64
    qtbot.waitUntil(lambda: train.view.previews_shown >= 1, timeout=120000)
    preview = train.client.run_dir / "preview.npy"  # the child wrote it into the run folder
    assert preview.is_file()
    qtbot.waitUntil(lambda: train.view.previews_shown >= 2, timeout=60000)
    assert viewer.layers[PREVIEW_LAYER] is layer  # updated in place, not a new layer
    assert [lay.name for lay in viewer.layers].count(PREVIEW_LAYER) == 1
    saved = train.save_model(tmp_path / "saved.safetensors")
    qtbot.waitUntil(saved.is_file, timeout=60000)  # the child's checkpoint, copied
    step = load_model(saved)[1]["training"]["step"]
    assert step >= 1
    train.stop_training(wait=True)
    assert not train.is_training()
    assert shared_models(viewer).metadata["training"]["step"] >= step


def test_continue_and_fine_tune_runs_carry_the_lower_fine_tuning_rate(
    make_napari_viewer, tmp_path, monkeypatch, tiny):
    """Start trains at the form's rate; Continue training and Start from a "Fine-tune from…"
    model write a quarter of it into the run's settings (at the Start rate the loop
    fell). Nothing is trained: the run folders are only written."""
    from napari_unet.core.io import save_model
    from napari_unet.core.model import UNet
    from napari_unet.core.training import FINE_TUNE_LR_FACTOR

    viewer = make_napari_viewer()
    image, truth = synthetic_cells((64, 64), radius=10, seed=0)
    viewer.add_image(image, name="cells")
    viewer.add_labels(truth, name="truth")
    train = TrainWidget(viewer)
    tiny(train, 5)
    monkeypatch.setattr(TrainWidget, "start_run", lambda self, run_dir, nproc=None: run_dir)

    def lr_of(run_dir):
        return read_run(run_dir)[1]["lr"]

    assert lr_of(train.start_training()) == pytest.approx(5e-3)  # from scratch: the form's
    net = UNet(depth=2, base_channels=8)
    shared_models(viewer).publish(net, {}, "test")
    assert lr_of(train.continue_training()) == pytest.approx(5e-3 * FINE_TUNE_LR_FACTOR)
    train.form.init_model = save_model(net, tmp_path / "parent.safetensors")
    assert lr_of(train.start_training()) == pytest.approx(5e-3 * FINE_TUNE_LR_FACTOR)
    assert FINE_TUNE_LR_FACTOR < 1
