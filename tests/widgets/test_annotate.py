"""GUI tests of the "Annotate cells" widget (real napari viewer under Xvfb)."""

import numpy as np
import pytest
import tifffile

from napari_unet.core.synthetic import synthetic_cells
from napari_unet.widgets.annotate import AnnotateWidget
from napari_unet.widgets.common import regions_mask

pytestmark = pytest.mark.gui


@pytest.fixture
def viewer_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    image, _ = synthetic_cells((64, 80), radius=8, seed=1)
    viewer.add_image(image, name="cells")
    widget = AnnotateWidget(viewer)
    return viewer, widget


def test_create_new_cell_and_count(viewer_widget, qtbot):
    _, widget = viewer_widget
    layer = widget.create_labels()
    assert layer.data.shape == (64, 80) and layer.name == "cells annotations"
    assert widget.create_labels() is layer  # attached, not a second layer
    assert widget.new_cell() == 1
    assert layer.mode == "paint" and layer.selected_label == 1
    layer.data[5:10, 5:10] = 1
    layer.data[20:30, 20:30] = 7
    layer.refresh()
    assert widget.new_cell() == 8
    widget.update_count()
    assert widget.count_label.text().startswith("2 annotated cells")


def test_single_plane_of_stack_counts(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 32, 32), np.float32), name="stack")
    widget = AnnotateWidget(viewer)
    layer = widget.create_labels()
    assert layer.data.shape == (3, 32, 32)
    layer.data[1, 2:5, 2:5] = 1
    layer.data[2, 2:5, 2:5] = 2
    viewer.dims.set_current_step(0, 1)
    assert widget.count_cells() == (1, 2)


def test_save_refuses_existing_file_and_load_adds_new_layer(viewer_widget, tmp_path):
    _, widget = viewer_widget
    layer = widget.create_labels()
    layer.data[3:9, 3:9] = 4
    path = widget.save(tmp_path / "ann.tif")
    np.testing.assert_array_equal(tifffile.imread(path), layer.data)
    before = path.read_bytes()
    layer.data[:] = 0
    with pytest.raises(FileExistsError, match="exists"):
        widget.save(path)
    assert path.read_bytes() == before
    loaded = widget.load(path)
    assert loaded is not layer and int(loaded.data.max()) == 4
    assert int(layer.data.max()) == 0  # the existing layer was not overwritten


def test_errors_become_notifications(make_napari_viewer, monkeypatch):
    from napari_unet.widgets import common

    seen = []
    monkeypatch.setattr(common, "show_error", seen.append)
    widget = AnnotateWidget(make_napari_viewer())
    widget._on_create()  # no image layer: must not raise
    assert seen and "image" in seen[0]


def test_regions_mask_from_rectangles(viewer_widget):
    viewer, widget = viewer_widget
    assert regions_mask(viewer, (64, 80)) is None
    shapes = widget.add_regions_layer()
    shapes.add_rectangles(np.array([[10, 20], [30, 50]]))
    mask = regions_mask(viewer, (64, 80))
    assert mask[15, 30] and not mask[5, 5] and not mask[40, 60]
    assert 400 <= mask.sum() <= 21 * 31


def test_annotate_and_cell_actions_share_one_layer_when_the_name_is_taken(viewer_widget):
    """A user layer holding "cells annotations" is never touched: Annotate adds
    "cells annotations (2)", and the cell actions of the Predict widget write that same layer
    (what they accept is what Annotate counts and Train reads)."""
    from napari_unet.widgets.cell_actions import CellActions

    viewer, widget = viewer_widget
    user = viewer.add_points(name="cells annotations")
    layer = widget.create_labels()
    assert layer.name == "cells annotations (2)" and viewer.layers["cells annotations"] is user
    widget.labels_combo.set_layer(None)
    assert widget.create_labels() is layer  # found again, not a third layer
    prediction = viewer.add_labels(np.zeros((64, 80), np.int32), name="cells prediction")
    prediction.data[10:20, 10:20] = 5
    actions = CellActions(viewer)
    actions.set_prediction(prediction, viewer.layers["cells"])
    assert actions.annotation_layer() is layer
    assert actions.apply("accept", [(15, 15)]) == [1]
    assert (layer.data[10:20, 10:20] == 1).all() and widget.count_cells()[0] == 1
    n = len(viewer.layers)
    assert actions.background_layer(create=False) is None and len(viewer.layers) == n
