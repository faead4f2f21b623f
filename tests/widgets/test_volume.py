"""GUI tests of volumes: annotated slices, the 3D rule line, 3D training in the child,
a 3D Labels prediction, the weight map of a slice and of the volume. Tiny networks and volumes;
generous waits, no timing assertions."""

import json

import numpy as np
import pytest

from napari_unet.core.model import UNet
from napari_unet.core.synthetic import synthetic_cells_3d
from napari_unet.widgets import volume
from napari_unet.widgets.annotate import AnnotateWidget
from napari_unet.widgets.common import shared_models
from napari_unet.widgets.model_choice import TRAINED
from napari_unet.widgets.predict import PredictWidget
from napari_unet.widgets.train import TrainWidget
from napari_unet.widgets.weight_map import WEIGHT_LAYER, WeightMapWidget

pytestmark = pytest.mark.gui

SHAPE, SPACING, PLANES = (12, 48, 48), (3.0, 1.0, 1.0), (3, 6, 9)


def _volume_viewer(make_napari_viewer, *, painted=PLANES, seed=0):
    """A synthetic volume (scale = its z step) whose cells are painted on ``painted`` planes."""
    viewer = make_napari_viewer()
    image, truth = synthetic_cells_3d(SHAPE, radius=7, spacing=SPACING, seed=seed)
    viewer.add_image(image, name="vol", scale=SPACING)
    annotate = AnnotateWidget(viewer)
    layer = annotate.create_labels()
    for z in painted:  # what the user paints: every cell of these planes
        layer.data[z] = truth[z]
    layer.data = layer.data
    return viewer, annotate, layer, image, truth


def _mark(viewer, annotate, planes):
    for z in planes:
        viewer.dims.set_current_step(0, z)  # steps of the world grid: z × its scale
        assert annotate.mark_slice() == (0, z)


def test_mark_and_unmark_slices_in_their_own_layer(make_napari_viewer, monkeypatch):
    viewer, annotate, labels, _, _ = _volume_viewer(make_napari_viewer)
    before = np.array(labels.data, copy=True)
    assert annotate.mark_button.isVisibleTo(annotate)
    _mark(viewer, annotate, PLANES)
    slices = viewer.layers["vol annotated slices"]
    assert slices.data.shape == SHAPE and tuple(slices.scale) == SPACING
    assert volume.count_slices(slices.data != 0) == {"z": 3, "y": 0, "x": 0}
    assert annotate.slices_label.text().startswith("3 annotated slices (3 xy)")
    viewer.dims.set_current_step(0, 6)
    annotate.mark_slice(False)
    assert annotate.slices_label.text().startswith("2 annotated slices")
    assert not slices.data[6].any() and slices.data[3].all() and slices.data[9].all()
    # an xz view (y sliced) marks a y plane; the user's labels are never written
    viewer.dims.order = (1, 0, 2)
    viewer.dims.set_current_step(1, 20)
    assert annotate.mark_slice() == (1, 20)
    assert slices.data[:, 20].all() and "1 xz" in annotate.slices_label.text()
    np.testing.assert_array_equal(labels.data, before)
    # the 3D view has no single plane: a notification with the fix
    from napari_unet.widgets import common

    seen = []
    monkeypatch.setattr(common, "show_error", seen.append)
    viewer.dims.ndisplay = 3
    annotate._on_mark()
    assert seen and "2D view" in seen[0]


def test_a_2d_image_has_no_slice_buttons(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="flat")
    annotate = AnnotateWidget(viewer)
    assert not annotate.mark_button.isVisibleTo(annotate)
    with pytest.raises(ValueError, match="annotated regions"):
        annotate.mark_slice()


def test_the_train_form_shows_the_3d_defaults_when_a_volume_is_chosen(make_napari_viewer):
    from napari_unet.core.training import gui_defaults_3d

    viewer = make_napari_viewer()
    train = TrainWidget(viewer)  # docked before any layer, as in napari
    flat = viewer.add_image(np.zeros((32, 32), np.float32), name="flat")
    tile_2d = train.form.controls["tile"].value()
    image, _ = synthetic_cells_3d(SHAPE, radius=7, spacing=SPACING, seed=0)
    vol = viewer.add_image(image, name="vol", scale=SPACING)
    train.form.data.image_combo.set_layer(vol)  # no labels layer yet
    want = gui_defaults_3d(train.form.controls["device"].currentText(), spacing=SPACING)
    assert train.form.controls["base_channels"].value() == want.base_channels and train.form.controls["tile"].value() == 0
    assert train.form.config().norm == "batch"
    train.form.data.image_combo.set_layer(flat)
    assert train.form.controls["tile"].value() == tile_2d


def test_train_form_on_a_volume_counts_the_marked_slices_only(make_napari_viewer):
    viewer, annotate, labels, _, truth = _volume_viewer(make_napari_viewer)
    train = TrainWidget(viewer)
    train.form.data.labels_combo.set_layer(labels)
    with pytest.raises(ValueError, match="Mark this slice annotated"):
        train.form.data.training_pairs()  # painted, but no plane marked yet
    _mark(viewer, annotate, PLANES[:2])
    (pair,) = train.form.data.training_pairs()
    assert pair.labels.shape == SHAPE and pair.annotated.sum() == 2 * 48 * 48
    cells = len(np.unique(truth[list(PLANES[:2])])) - 1
    text = train.update_rule()
    assert f"3D: 2 annotated slices (2 xy), {cells} cells, {2 * 48 * 48} voxels" in text
    assert "(3.0, 1.0, 1.0)" in text
    assert "pooling 1×2×2 2×2×2" in text  # z step 3 × the xy pixel: z pooled from level 2
    config = train.form.config()
    assert config.ndim == 3 and tuple(config.spacing) == SPACING
    # the clear switch back to a 2D model on the shown plane
    train.form.data.planes.setChecked(True)
    viewer.dims.set_current_step(0, 3)
    (plane,) = train.form.data.training_pairs()
    assert plane.labels.shape == (48, 48) and train.form.config().ndim == 2
    assert "3D" not in train.update_rule()


def test_slices_and_background_layers_with_a_taken_name_still_count(make_napari_viewer):
    """User layers holding "vol annotated slices" and "vol background" are never touched:
    the marks go to "vol annotated slices (2)" (one layer, found again on each mark) and the
    background brush to "vol background (2)", and both reach the 3D training pair."""
    viewer, annotate, labels, _, _ = _volume_viewer(make_napari_viewer)
    user_slices = viewer.add_points(name="vol annotated slices", ndim=3, scale=SPACING)
    user_background = viewer.add_points(name="vol background", ndim=3, scale=SPACING)
    _mark(viewer, annotate, PLANES[:2])
    slices = viewer.layers["vol annotated slices (2)"]
    assert "vol annotated slices (3)" not in viewer.layers
    assert viewer.layers["vol annotated slices"] is user_slices and not len(user_slices.data)
    assert volume.count_slices(slices.data != 0) == {"z": 2, "y": 0, "x": 0}
    brush = annotate.background_brush()
    assert brush.name == "vol background (2)"
    assert viewer.layers["vol background"] is user_background
    brush.data[PLANES[0], :4] = 1
    brush.data = brush.data
    (pair,) = volume.volume_pairs(viewer, [(viewer.layers["vol"], labels)], complete=False)
    assert pair.annotated.sum() == 2 * 48 * 48
    assert pair.background is not None and pair.background.sum() == 4 * 48
def test_predict_says_plane_by_plane_for_a_2d_model_on_a_stack(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, _ = synthetic_cells_3d((4, 40, 40), radius=7, seed=1)
    viewer.add_image(image, name="vol", scale=(2.0, 1.0, 1.0))
    widget = PredictWidget(viewer)
    shared_models(viewer).publish(UNet(depth=1, base_channels=2), {}, "test")
    assert "shown plane only" in widget.mode_label.text()
    widget.whole_stack.setChecked(True)
    assert "plane by plane" in widget.mode_label.text()
    widget.predict()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)
    layer = viewer.layers["vol prediction"]
    assert layer.data.shape == (4, 40, 40) and tuple(layer.scale) == (2.0, 1.0, 1.0)
    # the planes' labels linked into 3D objects: the same as stitch_planes of the planes' labels
    from napari_unet.core.predict.stitch import stitch_planes

    planes = np.asarray(layer.data).copy()
    assert widget.stitch.isEnabled()
    widget.stitch.setChecked(True)
    widget.predict()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)
    np.testing.assert_array_equal(np.asarray(widget.labels_layer.data), stitch_planes(planes))
    # a 3D model refuses a 2D image, naming both
    viewer.add_image(np.zeros((40, 40), np.float32), name="flat")
    widget.image_combo.set_layer(viewer.layers["flat"])
    shared_models(viewer).publish(UNet(depth=1, base_channels=2, ndim=3), {}, "test")
    with pytest.raises(ValueError, match="3D U-Net"):
        widget.predict()


def test_weight_map_of_the_slice_and_of_the_volume(make_napari_viewer, qtbot):
    viewer, annotate, labels, _, _ = _volume_viewer(make_napari_viewer)
    _mark(viewer, annotate, PLANES)
    widget = WeightMapWidget(viewer)
    widget.labels_combo.set_layer(labels)
    widget.compute()
    qtbot.waitUntil(lambda: widget._worker is None and WEIGHT_LAYER in viewer.layers,
                    timeout=30000)
    assert viewer.layers[WEIGHT_LAYER].data.shape == (48, 48)
    # a volume's plane follows the volume's rule: a plane not marked has weight 0 everywhere
    viewer.dims.set_current_step(0, 4)
    qtbot.waitUntil(lambda: widget._worker is None and "(plane (4,))" in widget.status.text()
                    and not viewer.layers[WEIGHT_LAYER].data.any(), timeout=30000)
    viewer.dims.set_current_step(0, 3)
    qtbot.waitUntil(lambda: widget._worker is None and "(plane (3,))" in widget.status.text()
                    and viewer.layers[WEIGHT_LAYER].data.all(), timeout=30000)
    widget.volume.setChecked(True)
    qtbot.waitUntil(lambda: viewer.layers[WEIGHT_LAYER].data.shape == SHAPE
                    and widget._worker is None, timeout=60000)
    weights = viewer.layers[WEIGHT_LAYER].data
    assert tuple(viewer.layers[WEIGHT_LAYER].scale) == SPACING
    assert "whole volume" in widget.status.text()
    assert np.all(weights[[0, 1, 2, 4, 5]] == 0) and np.all(weights[list(PLANES)] > 0)


@pytest.mark.slow
def test_a_tiny_3d_model_trains_on_annotated_slices_and_predicts_a_3d_labels_layer(
        make_napari_viewer, qtbot, tiny):
    viewer, annotate, labels, image, _ = _volume_viewer(make_napari_viewer)
    _mark(viewer, annotate, PLANES)
    train = TrainWidget(viewer)
    train.form.data.labels_combo.set_layer(labels)
    tiny(train, 40)
    assert train.update_rule().startswith("What counts: 3D: 3 annotated slices")
    train.start_training()
    qtbot.waitUntil(lambda: not train.is_training(), timeout=600000)
    assert train.client.terminal["kind"] == "done", train.client.proc and train.client.proc.stderr_tail[-3000:]
    settings = json.loads((train.client.run_dir / "settings.json").read_text())
    assert settings["ndim"] == 3 and settings["spacing"] == list(SPACING)
    model = shared_models(viewer).model
    assert model.ndim == 3
    predict = PredictWidget(viewer)
    assert predict.models.source.currentText() == TRAINED
    assert "3D model on a volume" in predict.mode_label.text()
    predict.image_combo.set_layer(viewer.layers["vol"])
    predict.predict()
    qtbot.waitUntil(lambda: predict.worker is None, timeout=300000)
    layer = viewer.layers["vol prediction"]
    assert layer.data.shape == SHAPE and tuple(layer.scale) == SPACING
    assert layer.data.max() > 0  # 40 steps on easy cells: some foreground is found
    np.testing.assert_array_equal(viewer.layers["vol"].data, image)  # inputs untouched
