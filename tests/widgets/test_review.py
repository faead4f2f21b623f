"""GUI tests of the loop's review: *Check these next* ranks the doubtful cells first and goes
to them; the cell actions write the annotation (never the prediction); accepting 3 cells and
pressing Continue trains on exactly those cells and their band."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.widgets.model_choice import SHIPPED
from napari_unet.widgets.predict import PredictWidget
from napari_unet.widgets.review_panel import MARKS

pytestmark = pytest.mark.gui


def nuclei_like(seed=0):
    """A 256² image of 26 bright round nuclei (radius 9-11) on a dark background, two of them
    touching in the middle, and its true labels: the shipped ``nuclei`` model finds them all."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:256, :256]
    truth = np.zeros((256, 256), np.int32)
    centres = [(28 + 50 * i + rng.integers(-4, 5), 28 + 50 * j + rng.integers(-4, 5))
               for i in range(5) for j in range(5)]
    centres[12] = (128, 118)
    centres.append((128, 139))
    for k, (cy, cx) in enumerate(centres, 1):
        r = rng.uniform(9, 11)
        truth[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (truth == 0)] = k
    image = ndi.gaussian_filter((truth > 0) * 180.0, 1.5) + 20 + rng.normal(0, 4, truth.shape)
    return np.clip(image, 0, 255).astype(np.uint8), truth


def _predict(viewer, qtbot, name):
    widget = PredictWidget(viewer)
    widget.models.source.setCurrentText("nuclei" + SHIPPED)
    widget.image_combo.set_layer(viewer.layers[name])
    widget.tta.setChecked(False)
    assert widget.predict() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120000)
    return widget


def _neighbours(labels, a, gap=6):
    ring = ndi.binary_dilation(labels == a, iterations=gap) & (labels != a) & (labels > 0)
    return sorted(set(np.unique(labels[ring]).tolist()))


def _typical_pair(labels):
    """Two neighbouring cells of about the median size, nearest the image centre."""
    ids, sizes = np.unique(labels[labels > 0], return_counts=True)
    median = np.median(sizes)
    typical = {int(i) for i, s in zip(ids, sizes, strict=True) if 0.7 < s / median < 1.4}
    centres = ndi.center_of_mass(np.ones_like(labels), labels, ids)
    mid = np.array(labels.shape) / 2
    for i in ids[np.argsort([np.linalg.norm(np.array(c) - mid) for c in centres])]:
        if int(i) in typical:
            for j in _neighbours(labels, i):
                if j in typical:
                    return int(i), int(j)
    raise AssertionError("no two neighbouring cells of the median size")


def _camera(viewer):
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def _click(viewer, layer, index):
    """A left click at a pixel of ``layer``, through the viewer's mouse callbacks."""
    event = SimpleNamespace(position=tuple(layer.data_to_world(index)), button=1,
                            type="mouse_press", modifiers=())
    for callback in list(viewer.mouse_drag_callbacks):
        callback(viewer, event)


def _inside(mask):
    """A pixel deep inside ``mask``."""
    dist = ndi.distance_transform_edt(mask)
    return tuple(int(v) for v in np.unravel_index(np.argmax(dist), mask.shape))


def test_the_list_ranks_two_merged_cells_first_and_goes_to_them(
        make_napari_viewer, qtbot, monkeypatch):
    from napari_unet.core.predict.postprocess import PostprocessSettings
    from napari_unet.core.review import merge

    original = PostprocessSettings.labels
    broken = {}

    def merging(self, prob, **options):  # the post-processing joins two touching cells
        labels = original(self, prob, **options)
        a, b = _typical_pair(labels)
        joined = merge(np.zeros(labels.shape, np.int32), None, labels == a, labels == b)[0]
        broken["label"], broken["mask"] = a, joined > 0
        return np.where(joined > 0, a, labels).astype(labels.dtype)

    monkeypatch.setattr(PostprocessSettings, "labels", merging)
    viewer = make_napari_viewer()
    image, _ = nuclei_like(0)
    viewer.add_image(image, name="cells")
    widget = _predict(viewer, qtbot, "cells")
    review = widget.review
    assert review.list.count() == min(20, len(review._all)) > 5
    first = review.review.iloc[0]
    assert (first["kind"], int(first["label"])) == ("cell", broken["label"])
    assert review.list.item(0).text().startswith(f"1. cell {broken['label']}:")
    marks = viewer.layers[MARKS]
    assert len(marks.data) == review.list.count()
    zoom = _camera(viewer).zoom
    review.next()  # the least certain first: centred on it, zoomed in, looked at
    cy, cx = np.argwhere(broken["mask"]).mean(0)
    assert review.list.currentRow() == 0
    np.testing.assert_allclose(_camera(viewer).center[-2:], (cy, cx), atol=3)
    assert _camera(viewer).zoom > zoom and broken["label"] in review.actions.looked
    review.next()
    review.next()
    assert review.list.currentRow() == 2
    review.previous()
    assert review.list.currentRow() == 1


def test_accept_reject_merge_split_change_only_the_annotation(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, _ = nuclei_like(1)
    viewer.add_image(image, name="cells")
    widget = _predict(viewer, qtbot, "cells")
    pred = widget.labels_layer
    before = np.array(pred.data, copy=True)
    actions = widget.review.actions
    a, b = _typical_pair(before)
    others = [int(i) for i in np.unique(before[before > 0]) if i not in (a, b)]
    c, d = others[0], others[len(others) // 2]

    actions.buttons["accept"].click()  # arm Accept, then click the cell
    _click(viewer, pred, _inside(before == c))
    ann = viewer.layers["cells annotations"]
    assert set(np.unique(ann.data)) == {0, 1} and ((ann.data == 1) == (before == c)).all()

    actions.buttons["reject"].click()
    _click(viewer, pred, _inside(before == d))
    background = viewer.layers["cells background"]
    assert ((background.data > 0) == (before == d)).all() and not ann.data[before == d].any()

    actions.buttons["merge"].click()
    _click(viewer, pred, _inside(before == a))
    _click(viewer, pred, _inside(before == b))
    merged = ann.data[_inside(before == a)]
    assert merged > 0 and (ann.data[(before == a) | (before == b)] == merged).all()

    actions.buttons["reject"].click()  # a rejected merge: back to background …
    _click(viewer, pred, _inside(before == a))
    actions.buttons["split"].click()  # … and a cell split in two by two clicks
    ys, xs = np.nonzero(before == others[-1])
    far = np.argmax(xs) if np.ptp(xs) >= np.ptp(ys) else np.argmax(ys)
    near = np.argmin(xs) if np.ptp(xs) >= np.ptp(ys) else np.argmin(ys)
    seeds = [(ys[k] + (ys.mean() - ys[k]) * 0.3, xs[k] + (xs.mean() - xs[k]) * 0.3)
             for k in (near, far)]
    for seed in seeds:
        _click(viewer, pred, tuple(round(v) for v in seed))
    parts = np.unique(ann.data[before == others[-1]])
    assert len(parts[parts > 0]) == 2

    np.testing.assert_array_equal(pred.data, before)  # the prediction never changes
    ann.undo()  # each action is one undoable change
    assert not ann.data[before == others[-1]].any()


def test_accepting_three_cells_and_continue_trains_on_exactly_them(
        make_napari_viewer, qtbot, tiny):
    from napari_unet.core.io.model_file import load_model
    from napari_unet.core.targets import band_width, counted_area
    from napari_unet.engine.runs import read_run
    from napari_unet.models import model_path
    from napari_unet.widgets.common import shared_models
    from napari_unet.widgets.train import TrainWidget

    viewer = make_napari_viewer()
    image, _ = nuclei_like(2)
    viewer.add_image(image, name="cells")
    path = model_path("nuclei")
    shared_models(viewer).publish(*load_model(path), "nuclei", path=path)  # the current model
    widget = _predict(viewer, qtbot, "cells")
    pred = np.array(widget.labels_layer.data, copy=True)
    review = widget.review
    for _ in range(3):  # the user goes through the first three suggested cells …
        review.next()
    looked = sorted(review.actions.looked)
    assert len(looked) == 3
    review.actions.accept_seen_button.click()  # … and accepts them as they are
    annotation = viewer.layers["cells annotations"]

    train = TrainWidget(viewer)
    tiny(train, 1)
    train.form.data.image_combo.set_layer(viewer.layers["cells"])
    train.form.data.labels_combo.set_layer(annotation)
    assert train.continue_training() is not None
    qtbot.waitUntil(lambda: not train.is_training(), timeout=120000)
    pairs, _, record = read_run(train.client.run_dir)
    assert record["parent_model"] == str(path) and len(pairs) == 1
    labels = pairs[0].labels
    assert len(np.unique(labels[labels > 0])) == 3
    assert ((labels > 0) == np.isin(pred, looked)).all()  # exactly the accepted cells
    counted = counted_area(labels, annotated=pairs[0].annotated, background=pairs[0].background,
                           sparse=pairs[0].sparse)
    near = ndi.distance_transform_edt(labels == 0) <= band_width(labels) + 1
    assert counted[labels > 0].all() and not counted[~near].any()  # them and their band
    assert json.loads((train.client.run_dir / "run.json").read_text())["status"] == "done"
