"""GUI tests of the sparse-annotation rule: a few painted cells train a model for all the cells."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.core.metrics import instance_matching
from napari_unet.core.synthetic import synthetic_cells
from napari_unet.widgets.annotate import AnnotateWidget
from napari_unet.widgets.predict import PredictWidget
from napari_unet.widgets.train import TrainWidget
from napari_unet.widgets.weight_map import IGNORED_LAYER, WeightMapWidget

pytestmark = pytest.mark.gui


def _nearest_centre(truth, n):
    ids = np.unique(truth[truth > 0])
    centres = np.array(ndi.center_of_mass(np.ones_like(truth), truth, ids))
    mid = (np.array(truth.shape) - 1) / 2
    return ids[np.argsort(np.linalg.norm(centres - mid, axis=1))[:n]]


def _paint(annotate, truth, ids):
    """Paint the given true cells with "New cell" ids, as a user would."""
    layer = annotate.create_labels()
    data = np.array(layer.data)
    for cid in ids:
        new = annotate.new_cell()
        data[truth == cid] = new
        layer.data = data.copy()
    return layer


def test_a_few_painted_cells_find_most_unpainted_cells(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, truth = synthetic_cells((256, 256), radius=12, seed=3)  # about 90 touching cells
    viewer.add_image(image, name="cells")
    annotate = AnnotateWidget(viewer)
    painted_ids = _nearest_centre(truth, 8)
    labels = _paint(annotate, truth, painted_ids)
    assert annotate.count_cells()[1] == 8

    train = TrainWidget(viewer)
    train.form.data.image_combo.set_layer(viewer.layers["cells"])
    train.form.data.labels_combo.set_layer(labels)
    form = train.form
    form.controls["depth"].setValue(2)
    form.controls["base_channels"].setValue(8)
    form.controls["steps"].setValue(150)
    form.controls["time_limit"].setValue(0)
    form.controls["lr"].setValue(5e-3)
    form.controls["batch_size"].setValue(2)
    form.controls["tile"].setValue(92)
    form.augment.setChecked(False)
    form.controls["device"].setCurrentText("cpu")
    form.live.setChecked(False)
    assert "8 cells" in train.update_rule() and "band" in train.rule.text()
    train.start_training()
    qtbot.waitUntil(lambda: not train.is_training(), timeout=900000)

    predict = PredictWidget(viewer)
    predict.image_combo.set_layer(viewer.layers["cells"])
    predict.predict()
    qtbot.waitUntil(lambda: predict.worker is None, timeout=300000)
    pred = np.asarray(viewer.layers["cells prediction"].data)
    unpainted = np.where(np.isin(truth, painted_ids), 0, truth)
    ids = np.unique(unpainted[unpainted > 0])
    # a cell is found when the prediction covers most of it as foreground
    covered = ndi.mean(pred > 0, unpainted, ids)
    found = float(np.mean(covered > 0.5))
    # most of the ~85 cells nobody painted are found (taught as background, almost none
    # would be)
    assert found > 0.75, (found, instance_matching(pred, truth))


def test_background_brush_and_the_not_counted_area(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, truth = synthetic_cells((96, 96), radius=10, seed=1)
    viewer.add_image(image, name="cells")
    annotate = AnnotateWidget(viewer)
    labels = _paint(annotate, truth, _nearest_centre(truth, 2))
    user = viewer.add_points(name="cells background")  # not ours: never overwritten
    brush = annotate.background_brush()
    assert brush.name == "cells background (2)" and brush.selected_label == 1
    assert brush.mode == "paint" and viewer.layers.selection.active is brush
    assert "cells background" in viewer.layers and viewer.layers["cells background"] is user
    assert annotate.background_brush() is brush  # selected again, not made twice
    data = np.zeros(brush.data.shape, brush.data.dtype)
    data[:, -6:] = 1
    brush.data = data

    weights = WeightMapWidget(viewer)
    weights.labels_combo.set_layer(labels)
    qtbot.waitUntil(lambda: IGNORED_LAYER in viewer.layers, timeout=30000)
    ignored = np.asarray(viewer.layers[IGNORED_LAYER].data) > 0
    assert ignored.any() and not ignored[labels.data > 0].any()
    assert not ignored[:, -6:].any()  # the painted background counts
    assert "pixels count" in weights.status.text()

    train = TrainWidget(viewer)
    train.form.data.image_combo.set_layer(viewer.layers["cells"])
    train.form.data.labels_combo.set_layer(labels)
    pair = train.form.data.training_pairs()[0]
    assert pair.sparse and pair.background[:, -6:].all()
    text = train.update_rule()
    assert "2 cells" in text and "marked background" in text and "pixels count" in text
    train.form.data.complete.setChecked(True)
    assert "complete labels" in train.update_rule()
