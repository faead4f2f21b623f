"""The cells' table in the Predict widget: every prediction's labels layer gets ``features``
(napari's features table and the hover status show them), *Measure cells* measures any labels
layer, *Export CSV…* writes the command line's columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.measure import regionprops

from napari_unet.core.measure import measure_cells, with_units
from napari_unet.sample_data import nuclei
from napari_unet.widgets.model_choice import SHIPPED
from napari_unet.widgets.predict import PredictWidget

pytestmark = pytest.mark.gui

COLUMNS = ["index", "area [px²]", "centroid_y [px]", "centroid_x [px]", "bbox_y0 [px]",
           "bbox_x0 [px]", "bbox_y1 [px]", "bbox_x1 [px]", "equivalent_diameter [px]",
           "eccentricity", "solidity", "mean_intensity", "min_intensity", "max_intensity",
           "integrated_intensity", "touches_border", "mean_probability", "confidence"]


def _wait(qtbot, holder):
    qtbot.waitUntil(lambda: holder.worker is None, timeout=60000)


def test_predict_on_the_nuclei_sample_gives_the_labels_layer_its_cells_table(
        make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    for data, meta, kind in nuclei():
        getattr(viewer, f"add_{kind}")(data, **meta)
    widget = PredictWidget(viewer)
    widget.models.source.setCurrentText("nuclei" + SHIPPED)
    widget.image_combo.set_layer(viewer.layers["nuclei (DSB2018)"])
    widget.tta.setChecked(False)
    widget.predict()
    _wait(qtbot, widget)
    layer = viewer.layers["nuclei (DSB2018) prediction"]
    features = layer.features
    assert list(features.columns) == COLUMNS
    image = viewer.layers["nuclei (DSB2018)"].data
    regions = regionprops(np.asarray(layer.data), image)
    assert len(regions) > 30 and features["index"].tolist() == [r.label for r in regions]
    np.testing.assert_allclose(features["area [px²]"], [r.area for r in regions])
    np.testing.assert_allclose(features["mean_intensity"], [r.intensity_mean for r in regions],
                               rtol=1e-5)
    np.testing.assert_allclose(features["solidity"], [r.solidity for r in regions], rtol=1e-6)
    assert features["mean_probability"].between(0.5, 1.0).all()
    cell = regions[len(regions) // 2]  # hovering a cell shows its row
    status = layer.get_status(np.round(cell.coords[0]).astype(float))["coordinates"]
    assert f"area [px²]: {int(cell.area)}" in status
    assert "cells, mean area" in widget.cells.status.text()


def _hand_made(viewer):
    """Two cells of known sizes and intensities, pixels of 0.5 µm."""
    labels = np.zeros((40, 50), np.int32)
    image = np.full((40, 50), 7, np.uint16)
    labels[5:15, 10:30], image[5:15, 10:30] = 4, 100  # 200 px = 50 µm²
    labels[30:40, 40:50], image[30:40, 40:50] = 9, np.arange(100).reshape(10, 10)  # 100 px
    kw = dict(scale=(0.5, 0.5), units=("µm", "µm"))
    return (viewer.add_labels(labels, name="cells", **kw),
            viewer.add_image(image, name="img", **kw), labels, image)


def test_measure_cells_measures_any_labels_layer_in_physical_units(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    labels_layer, image_layer, labels, image = _hand_made(viewer)
    widget = PredictWidget(viewer)
    widget.cells.labels_combo.set_layer(labels_layer)
    widget.cells.image_combo.set_layer(image_layer)
    widget.cells.measure_button.click()
    _wait(qtbot, widget.cells)
    f = labels_layer.features
    assert f["index"].tolist() == [4, 9]
    assert f["area [µm²]"].tolist() == [50.0, 25.0]
    assert f["mean_intensity"].tolist() == [100.0, 49.5]
    assert f[["min_intensity", "max_intensity"]].values.tolist() == [[100, 100], [0, 99]]
    assert f["integrated_intensity"].tolist() == [20000.0, 4950.0]
    assert f["touches_border"].tolist() == [False, True]
    assert f["centroid_y [µm]"].tolist() == [0.5 * 9.5, 0.5 * 34.5]
    regions = regionprops(labels, image, spacing=(0.5, 0.5))
    np.testing.assert_allclose(f["eccentricity"], [r.eccentricity for r in regions])
    np.testing.assert_allclose(f["equivalent_diameter [µm]"],
                               [r.equivalent_diameter_area for r in regions])


def test_export_csv_writes_the_command_lines_columns(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    labels_layer, image_layer, labels, image = _hand_made(viewer)
    widget = PredictWidget(viewer)
    with pytest.raises(ValueError, match="no cells' table yet"):
        widget.cells.export_csv(tmp_path / "none.csv", labels_layer)
    widget.cells.measure(labels_layer, image_layer)
    _wait(qtbot, widget.cells)
    path = widget.cells.export_csv(tmp_path / "cells.csv", labels_layer)
    table = pd.read_csv(path)
    expected = with_units(measure_cells(labels, image, spacing=(0.5, 0.5), unit="µm"))
    assert list(table.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)


def test_a_wrong_image_is_a_notification(make_napari_viewer, monkeypatch):
    from napari_unet.widgets import common

    seen = []
    monkeypatch.setattr(common, "show_error", seen.append)
    viewer = make_napari_viewer()
    labels_layer, *_ = _hand_made(viewer)
    other = viewer.add_image(np.zeros((10, 10)), name="small")
    widget = PredictWidget(viewer)
    widget.cells.labels_combo.set_layer(labels_layer)
    widget.cells.image_combo.set_layer(other)
    widget.cells._on_measure()
    assert seen and "intensities: 'small' has shape (10, 10)" in seen[0]
    assert widget.cells.worker is None


def test_with_flips_the_table_says_how_much_they_disagree(make_napari_viewer, qtbot):
    import torch

    from napari_unet.core.model import UNet
    from napari_unet.core.synthetic import synthetic_cells
    from napari_unet.widgets.common import shared_models

    viewer = make_napari_viewer()
    image, _ = synthetic_cells((48, 48), radius=6, seed=2)
    viewer.add_image(image, name="img")
    from napari_unet.core.predict import predict_image

    torch.manual_seed(0)
    net = UNet(depth=1, base_channels=4, padding="same")
    middle = float(np.median(predict_image(net, image, tta=True)[1]))  # many cells at this level
    shared_models(viewer).publish(net, {"postprocess": {"threshold": middle, "min_size": 1}},
                                  "test")
    widget = PredictWidget(viewer)
    widget.tta.setChecked(True)
    widget.predict()
    _wait(qtbot, widget)
    features = viewer.layers["img prediction"].features
    assert len(features) > 0 and features["mean_flip_std"].between(0, 0.5).all()
