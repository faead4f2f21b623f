"""The Train and Predict widgets offer the shipped named models (napari_unet.models)."""

import numpy as np
import pytest
import torch

import napari_unet.models as models
from napari_unet.core.io import save_model
from napari_unet.core.model import UNet
from napari_unet.widgets.model_choice import SHIPPED
from napari_unet.widgets.predict import PredictWidget
from napari_unet.widgets.train import TrainWidget

pytestmark = pytest.mark.gui


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_HERE", tmp_path)
    return tmp_path


def _ship(folder):
    torch.manual_seed(0)
    save_model(UNet(depth=1, base_channels=4).half(), folder / "nuclei.safetensors")


def test_predict_widget_offers_shipped_model(make_napari_viewer, registry):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32))
    widget = PredictWidget(viewer)
    name = "nuclei" + SHIPPED
    assert widget.models.source.findText(name) >= 0
    widget.models.source.setCurrentText(name)
    with pytest.raises(ValueError, match="no weights"):
        widget.models.model()
    _ship(registry)
    model, _ = widget.models.model()
    assert isinstance(model, UNet) and next(model.parameters()).dtype == torch.float32


def test_train_widget_offers_shipped_model(make_napari_viewer, registry, monkeypatch):
    from napari_unet.widgets import common

    seen = []
    monkeypatch.setattr(common, "show_error", seen.append)
    widget = TrainWidget(make_napari_viewer())
    index = widget.form.shipped.findText("nuclei")
    assert index > 0
    widget._on_shipped(index)
    assert seen and "no weights" in seen[0] and widget.form.init_model is None
    _ship(registry)
    widget._on_shipped(index)
    assert widget.form.init_model == registry / "nuclei.safetensors"
    assert "nuclei" in widget.form.init_label.text()
