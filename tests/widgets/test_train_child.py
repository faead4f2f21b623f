"""GUI tests of training in a child process: a killed child, two processes under torchrun from
the widget's launcher, the memory estimate before Start. Tiny networks and images; generous
waits, no timing assertions."""

import json

import numpy as np
import pytest

from napari_unet.core.io import load_model
from napari_unet.core.synthetic import synthetic_cells
from napari_unet.widgets.common import shared_models
from napari_unet.widgets.train import TrainWidget

pytestmark = pytest.mark.gui




def _viewer(make_napari_viewer, seed=0):
    viewer = make_napari_viewer()
    image, truth = synthetic_cells((64, 64), radius=10, seed=seed)
    viewer.add_image(image, name="cells")
    viewer.add_labels(truth, name="truth")
    return viewer, image, truth


def test_sigkill_of_the_child_is_a_notification_and_the_checkpoint_loads(
    make_napari_viewer, qtbot, monkeypatch, tmp_path, tiny):
    from napari_unet.widgets import common

    errors = []
    monkeypatch.setattr(common, "show_error", errors.append)
    viewer, image, truth = _viewer(make_napari_viewer)
    train = TrainWidget(viewer)
    tiny(train, 100_000)
    proc = train.start_training()
    qtbot.waitUntil(lambda: len(train.view.plot.losses) >= 2, timeout=120000)
    saved = train.save_model(tmp_path / "before.safetensors")  # a checkpoint in the run
    qtbot.waitUntil(saved.is_file, timeout=60000)
    proc.kill()  # what the kernel's out-of-memory killer does
    qtbot.waitUntil(lambda: not train.is_training(), timeout=60000)
    assert proc.returncode == -9
    assert errors and "SIGKILL" in errors[-1] and "smaller tile" in errors[-1]
    # napari and its layers are untouched
    assert [layer.name for layer in viewer.layers][:2] == ["cells", "truth"]
    np.testing.assert_array_equal(viewer.layers["truth"].data, truth)
    np.testing.assert_array_equal(viewer.layers["cells"].data, image)
    # the run is listed as failed and its last checkpoint is what Reload run loads
    record = json.loads((train.client.run_dir / "run.json").read_text())
    assert record["status"] == "error"
    assert "error" in train.runs.list.item(train.runs.list.count() - 1).text()
    path = train.reload_run(train.client.run_dir)
    assert path.name == "last.safetensors"
    assert shared_models(viewer).metadata["training"]["step"] >= 2
    load_model(path)


def test_two_gloo_processes_from_the_widgets_launcher(make_napari_viewer, qtbot, tiny):
    viewer, _, _ = _viewer(make_napari_viewer, seed=1)
    train = TrainWidget(viewer)
    tiny(train, 4)
    assert not train.form.gpus.isVisibleTo(train.form)  # one device: no GPUs setting
    train.form.set_gpu_limit(2)  # as on a machine with two GPUs; here two CPU processes
    train.form.gpus.setValue(2)
    assert train.form.nproc() == 2
    proc = train.start_training()
    assert proc.nproc == 2 and "--nproc_per_node=2" in proc.command
    qtbot.waitUntil(lambda: not train.is_training(), timeout=240000)
    assert train.client.terminal["kind"] == "done", proc.stderr_tail[-3000:]
    assert proc.started["world_size"] == 2
    assert train.view.plot.steps == [1, 2, 3, 4]  # rank 0 alone reports
    assert shared_models(viewer).metadata["training"]["step"] == 4


def test_a_batch_that_does_not_split_over_the_gpus_is_refused(make_napari_viewer, monkeypatch, tiny):
    from napari_unet.widgets import common

    errors = []
    monkeypatch.setattr(common, "show_error", errors.append)
    viewer, _, _ = _viewer(make_napari_viewer)
    train = TrainWidget(viewer)
    tiny(train, 4)
    train.form.set_gpu_limit(2)
    train.form.gpus.setValue(2)
    train.form.controls["batch_size"].setValue(3)
    train._on_start()
    assert errors and "batch: the global batch must be a multiple of the 2 processes" in \
        errors[-1] and "a batch of 4" in errors[-1]
    assert not train.is_training()


def test_settings_the_device_cannot_hold_are_refused_before_start(
    make_napari_viewer, monkeypatch, _runs_in_tmp, tiny):
    from napari_unet.core.model import valid_input_shape
    from napari_unet.widgets import common

    errors = []
    monkeypatch.setattr(common, "show_error", errors.append)
    viewer, _, _ = _viewer(make_napari_viewer)
    train = TrainWidget(viewer)
    tiny(train, 4)
    train.form.controls["depth"].setValue(6)
    train.form.controls["base_channels"].setValue(128)
    train.form.controls["tile"].setValue(valid_input_shape(1980, depth=6)[0])
    train.form.controls["batch_size"].setValue(64)
    train._on_start()
    assert errors and "memory" in errors[-1].lower()
    assert not train.is_training() and not _runs_in_tmp.exists()  # nothing written
