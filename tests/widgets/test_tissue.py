"""The Predict widget and a model trained on a tissue: the cells fill the space by default."""

import numpy as np
import pytest
import torch

from napari_unet.core.io import save_model
from napari_unet.core.model import UNet
from napari_unet.core.predict import PostprocessSettings, predict_image
from napari_unet.core.synthetic import synthetic_tissue
from napari_unet.widgets.predict import PredictWidget

pytestmark = pytest.mark.gui


def test_a_tissue_model_fills_the_space_unless_the_box_is_unticked(
        make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    image, _ = synthetic_tissue((44, 44), cell_size=10, seed=0)
    viewer.add_image(image, name="img")
    widget = PredictWidget(viewer)
    widget.tta.setChecked(False)
    torch.manual_seed(0)
    net = UNet(num_classes=3, depth=1, base_channels=4)
    widget.models.load_model(save_model(net, tmp_path / "tissue.safetensors", target="tissue"))
    box = widget.postprocess.controls["tissue"]
    assert box.isChecked()
    # a short text keeps the dock narrow; the whole help is the tooltip
    assert box.text() == "cells fill the space (a tissue)"
    assert box.toolTip().startswith("cells fill the space: every tissue pixel goes to a cell")
    prob = predict_image(net.eval(), image)
    for tissue in (True, False):
        box.setChecked(tissue)
        widget.predict()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=20000)
        expected = PostprocessSettings(tissue=tissue).labels(prob)
        np.testing.assert_array_equal(viewer.layers["img prediction"].data, expected)
    plain = save_model(UNet(depth=1, base_channels=4), tmp_path / "plain.safetensors")
    widget.models.load_model(plain)
    assert not box.isChecked()
