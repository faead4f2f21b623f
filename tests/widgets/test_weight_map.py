"""GUI tests of the "Weight map" widget."""

import numpy as np
import pytest

from napari_unet.core.synthetic import synthetic_cells, synthetic_tissue
from napari_unet.widgets.weight_map import (
    BORDER_LAYER,
    WALL_LAYER,
    WEIGHT_LAYER,
    WeightMapWidget,
    compute_weight_map,
)

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

    labels = np.zeros((40, 60), np.uint16)
    labels[10:30, 10:27] = 1
    labels[10:30, 33:50] = 2  # outside the region, 3 pixels beyond its edge
    region = np.zeros(labels.shape, bool)
    region[:, :30] = True  # the annotation is complete here only
    pair = TrainingPair(np.zeros(labels.shape, np.float32), labels, annotated=region)
    (prep,) = prepare_pairs([pair], pad=0)
    view = compute_weight_map(
        labels, w0=10.0, sigma=5.0, class_balance=True, num_classes=2, annotated=region,
        sparse=False)
    np.testing.assert_array_equal(view.weights, prep.weights)
    assert np.array_equal(view.ignored, ~prep.counted) and view.target == "objects"


def test_a_tissue_shows_the_tissue_target_and_its_walls(make_napari_viewer, qtbot):
    """Cells that fill the space (background only outside the tissue): the widget recognises
    the annotation as training does and shows the tissue target's weights (background, cell,
    wall balanced) and its walls, not the objects' weights; forced to objects, the paper's."""
    from napari_unet.core.targets import make_target
    from napari_unet.core.training.data import TrainingPair, prepare_pairs

    viewer = make_napari_viewer()
    image, labels = synthetic_tissue((48, 48), cell_size=12, outside=8, seed=0)
    viewer.add_image(image, name="tissue")
    viewer.add_labels(labels, name="tissue labels")
    widget = WeightMapWidget(viewer)
    widget.complete.setChecked(True)  # every pixel counts, as in TrainingPair(image, labels)
    (tissue,) = prepare_pairs([TrainingPair(image, labels)], pad=0, num_classes=3, tissue=True)
    (objects,) = prepare_pairs([TrainingPair(image, labels)], pad=0)
    assert not np.array_equal(tissue.weights, objects.weights)  # the balance of 3 classes

    def shown(name, weights):
        return (name in viewer.layers and widget._worker is None
                and np.array_equal(viewer.layers[WEIGHT_LAYER].data, weights))

    qtbot.waitUntil(lambda: shown(WALL_LAYER, tissue.weights), timeout=10000)
    walls = make_target(labels, num_classes=3, tissue=True)[0] == 2
    np.testing.assert_array_equal(viewer.layers[WALL_LAYER].data > 0, walls)
    assert BORDER_LAYER not in viewer.layers
    assert widget.status.text().startswith("tissue target")
    widget.target.setCurrentText("objects")
    qtbot.waitUntil(lambda: shown(BORDER_LAYER, objects.weights), timeout=10000)
    assert WALL_LAYER not in viewer.layers and "tissue" not in widget.status.text()


def test_three_annotated_planes_of_a_tissue_show_the_tissue_target():
    """A volume annotated on 3 planes reads as a tissue (the planes between are unknown, not
    background) and the weights are those a 3D training on the planes uses."""
    from napari_unet.core.targets import slices_mask
    from napari_unet.core.training.data import TrainingPair, prepare_pairs

    image, labels = synthetic_tissue((12, 32, 32), cell_size=10, outside=6, seed=1)
    planes = slices_mask(labels.shape, z=[2, 6, 10])
    view = compute_weight_map(labels, w0=10.0, sigma=5.0, class_balance=True, num_classes=2,
                              annotated=planes, sparse=False, spacing=(2.0, 1.0, 1.0))
    (prep,) = prepare_pairs([TrainingPair(image, labels, annotated=planes, ndim=3,
                                          spacing=(2.0, 1.0, 1.0))], pad=0, num_classes=3,
                            tissue=True)
    assert view.target == "tissue" and view.reason.endswith("outline touches another cell")
    np.testing.assert_array_equal(view.weights, prep.weights)
    assert view.borders[planes].any() and not view.borders[~planes].any()


def test_a_plane_between_annotated_slices_keeps_the_volumes_kind(make_napari_viewer, qtbot):
    """Shown a plane between the marked slices of a tissue volume (nothing annotated on it),
    the widget recognises the kind on the volume's slices, as training does: the tissue."""
    from napari_unet.core.targets import slices_mask

    viewer = make_napari_viewer()
    image, labels = synthetic_tissue((12, 32, 32), cell_size=10, seed=1)
    planes = slices_mask(labels.shape, z=[2, 6, 10])
    viewer.add_image(image, name="vol")
    viewer.add_labels(np.where(planes, labels, 0), name="vol annotations")
    viewer.add_labels(planes.astype(np.uint8), name="vol annotated slices")
    viewer.dims.set_current_step(0, 4)
    widget = WeightMapWidget(viewer)
    qtbot.waitUntil(lambda: WALL_LAYER in viewer.layers and widget._worker is None,
                    timeout=10000)
    assert widget.status.text().startswith("tissue target") and "(plane (4,))" in \
        widget.status.text()
    assert BORDER_LAYER not in viewer.layers and not viewer.layers[WEIGHT_LAYER].data.any()
