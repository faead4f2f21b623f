"""GUI tests of the "Weight map" widget."""

import numpy as np
import pytest

from napari_unet.core.synthetic import synthetic_cells
from napari_unet.widgets.weight_map import BORDER_LAYER, WEIGHT_LAYER, WeightMapWidget

pytestmark = pytest.mark.gui


def test_weight_map_appears_and_follows_parameters_and_painting(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, labels = synthetic_cells((64, 64), radius=8, seed=2)
    viewer.add_image(image, name="cells")
    layer = viewer.add_labels(labels, name="truth")
    widget = WeightMapWidget(viewer)
    qtbot.waitUntil(lambda: WEIGHT_LAYER in viewer.layers and widget._worker is None, timeout=10000)
    weights = viewer.layers[WEIGHT_LAYER].data
    assert weights.shape == (64, 64) and weights.dtype == np.float32
    assert viewer.layers[WEIGHT_LAYER].colormap.name == "magma"
    assert viewer.layers[BORDER_LAYER].data.any()
    # w0 up -> the border peaks go up, in the same layer
    peak = float(weights.max())
    widget.w0.setValue(30.0)
    qtbot.waitUntil(lambda: float(viewer.layers[WEIGHT_LAYER].data.max()) > peak + 5, timeout=10000)
    # painting: erase all cells -> no borders left
    layer.data = np.zeros_like(labels)
    qtbot.waitUntil(lambda: not viewer.layers[BORDER_LAYER].data.any(), timeout=10000)


def test_never_replaces_a_user_layer_of_the_same_name(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    mine = viewer.add_image(np.ones((32, 32), np.float32), name=WEIGHT_LAYER)
    viewer.add_labels(synthetic_cells((32, 32), radius=6, seed=0)[1], name="truth")
    widget = WeightMapWidget(viewer)
    qtbot.waitUntil(lambda: widget.weight_layer is not None, timeout=10000)
    assert widget.weight_layer is not mine and np.all(mine.data == 1)


def test_no_labels_is_a_notification(make_napari_viewer, monkeypatch):
    from napari_unet.widgets import common

    seen = []
    monkeypatch.setattr(common, "show_error", seen.append)
    widget = WeightMapWidget(make_napari_viewer())
    widget._on_compute()
    assert seen and "labels" in seen[0]


def test_the_widget_shows_the_weights_training_uses():
    """A labelled cell outside the annotated region, near a counted one: training drops it
    before the border distances (it is unknown there), and so does the widget's map."""
    from napari_unet.core.training.data import TrainingPair, prepare_pairs
    from napari_unet.widgets.weight_map import compute_weight_map

    labels = np.zeros((40, 60), np.uint16)
    labels[10:30, 10:27] = 1
    labels[10:30, 33:50] = 2  # outside the region, 3 pixels beyond its edge
    region = np.zeros(labels.shape, bool)
    region[:, :30] = True  # the annotation is complete here only
    pair = TrainingPair(np.zeros(labels.shape, np.float32), labels, annotated=region)
    (prep,) = prepare_pairs([pair], pad=0)
    weights, _, ignored = compute_weight_map(
        labels, w0=10.0, sigma=5.0, class_balance=True, num_classes=2, annotated=region,
        sparse=False)
    np.testing.assert_array_equal(weights, prep.weights)
    assert np.array_equal(ignored, ~prep.counted)
