"""GUI tests of the "Predict" widget (a tiny untrained model: shapes, layers, errors, compare)."""

import numpy as np
import pytest

from napari_unet.core.io import save_model
from napari_unet.core.metrics import compare_instances
from napari_unet.core.model import UNet
from napari_unet.core.predict import PostprocessSettings, predict_image
from napari_unet.core.synthetic import synthetic_cells
from napari_unet.widgets.common import shared_models
from napari_unet.widgets.model_choice import TRAINED
from napari_unet.widgets.predict import PredictWidget

pytestmark = pytest.mark.gui


def test_compare_instances_classes_each_cell():
    truth = np.zeros((10, 10), np.int32)
    truth[0:4, 0:4], truth[6:9, 6:9] = 1, 2
    pred = np.zeros_like(truth)
    pred[0:4, 0:4], pred[0:2, 7:9] = 5, 6
    comparison, scores = compare_instances(pred, truth)
    assert comparison[1, 1] == 1 and comparison[7, 7] == 2 and comparison[0, 8] == 3
    assert (scores["tp"], scores["fn"], scores["fp"]) == (1, 1, 1)
    assert scores["f1"] == pytest.approx(0.5)


def test_no_model_is_a_notification(make_napari_viewer, monkeypatch):
    from napari_unet.widgets import common

    seen = []
    monkeypatch.setattr(common, "show_error", seen.append)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32))
    widget = PredictWidget(viewer)
    widget._on_run()
    assert seen and "Train U-Net" in seen[0] and widget.worker is None


def test_predict_plane_of_stack_overlays_labels_and_compares(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    image, labels = synthetic_cells((48, 48), radius=6, seed=3)
    viewer.add_image(np.stack([image, image[::-1]]), name="stack")
    viewer.add_labels(np.stack([labels, labels[::-1]]), name="truth")
    widget = PredictWidget(viewer)
    net = UNet(depth=1, base_channels=4)
    path = save_model(net, tmp_path / "tiny.safetensors")
    widget.models.load_model(path)
    assert widget.models.source.currentText().startswith("tiny.safetensors")
    widget.compare_combo.set_layer(viewer.layers["truth"])
    widget.contours.setChecked(True)
    widget.probabilities.setChecked(True)
    viewer.dims.set_current_step(0, 1)
    worker = widget.predict()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=20000)
    layer = viewer.layers["stack prediction"]
    assert layer.data.shape == (48, 48) and layer.contour == 2
    shown = viewer.layers["stack probability"].data
    plane1, plane0 = (predict_image(net, p)[1] for p in (image[::-1], image))
    np.testing.assert_allclose(shown, plane1, atol=1e-5)  # the plane on screen was predicted
    assert not np.allclose(shown, plane0, atol=1e-3)
    comparison = viewer.layers["comparison (matched/missed/extra)"].data
    assert set(np.unique(comparison)) <= {0, 1, 2, 3}
    assert "F1@0.5" in widget.scores.text()


def test_every_cli_post_processing_option_is_in_the_widget_with_the_models_defaults(
        make_napari_viewer, qtbot, tmp_path):
    import argparse
    from dataclasses import fields

    from napari_unet.commands import predict as predict_cmd

    parser = argparse.ArgumentParser()
    predict_cmd.add_arguments(parser)
    cli = {a.dest for a in parser._actions}
    names = {f.name for f in fields(PostprocessSettings)}
    viewer = make_napari_viewer()
    image, _ = synthetic_cells((40, 40), radius=6, seed=1)
    viewer.add_image(image, name="img")
    widget = PredictWidget(viewer)
    assert names <= cli and set(widget.postprocess.controls) == names
    stored = {"threshold": 0.3, "watershed": True, "min_size": 3, "regrow": 2}
    net = UNet(depth=1, base_channels=4)
    widget.models.load_model(save_model(net, tmp_path / "m.safetensors", postprocess=stored))
    assert widget.postprocess.value() == PostprocessSettings(**stored)
    widget.postprocess.controls["min_size"].setValue(7)  # the user's choice is what runs
    widget.predict()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=20000)
    expected = PostprocessSettings(**{**stored, "min_size": 7}).labels(predict_image(net, image))
    np.testing.assert_array_equal(viewer.layers["img prediction"].data, expected)


def test_trained_model_comes_from_the_viewer_registry(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((40, 40), dtype=np.float32), name="img")
    widget = PredictWidget(viewer)
    assert widget.models.source.currentText() == TRAINED
    shared_models(viewer).publish(UNet(depth=1, base_channels=4, padding="same"), {}, "test")
    assert "depth 1" in widget.models.label.text()
    worker = widget.predict()
    assert widget.predict() is None  # a second run while one is going is refused
    assert worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=20000)
    assert viewer.layers["img prediction"].data.shape == (40, 40)


def _predict(widget, qtbot):
    assert widget.predict() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=20000)


def test_predicting_again_never_overwrites_an_edited_prediction(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((40, 40), dtype=np.float32), name="img")
    widget = PredictWidget(viewer)
    shared_models(viewer).publish(UNet(depth=1, base_channels=4, padding="same"), {}, "test")
    _predict(widget, qtbot)
    first = viewer.layers["img prediction"]
    _predict(widget, qtbot)  # not edited: the same layer is updated
    assert viewer.layers["img prediction"] is first and "img prediction (2)" not in viewer.layers
    first.selected_label = 7
    first.paint((20, 20), 7)  # the user corrects the prediction
    edited = np.array(first.data)
    assert edited[20, 20] == 7
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)  # another model: its prediction differs
    shared_models(viewer).publish(UNet(depth=1, base_channels=4, padding="same"), {}, "test")
    _predict(widget, qtbot)
    np.testing.assert_array_equal(viewer.layers["img prediction"].data, edited)
    assert widget.labels_layer is viewer.layers["img prediction (2)"]


def test_use_as_annotation_copies_into_a_new_layer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((40, 40), dtype=np.float32), name="img")
    viewer.add_labels(np.ones((40, 40), np.int32), name="img annotation")  # the user's own
    widget = PredictWidget(viewer)
    shared_models(viewer).publish(UNet(depth=1, base_channels=4, padding="same"), {}, "test")
    _predict(widget, qtbot)
    layer = widget.use_as_annotation()
    assert layer.name == "img annotation (2)" and layer is not widget.labels_layer
    np.testing.assert_array_equal(layer.data, widget.labels_layer.data)
    layer.data[0, 0] = 99
    assert widget.labels_layer.data[0, 0] != 99  # a copy, not the prediction itself
    assert np.all(viewer.layers["img annotation"].data == 1)  # the existing one is untouched


def test_two_models_with_the_same_file_name_are_both_kept(make_napari_viewer, tmp_path):
    import torch

    viewer = make_napari_viewer()
    widget = PredictWidget(viewer)
    paths = []
    for folder, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        paths.append(save_model(UNet(depth=1, base_channels=4), tmp_path / folder / "model.safetensors"))
    before = widget.models.source.count()  # the trained model + the shipped ones
    first, _ = widget.models.load_model(paths[0])
    second, _ = widget.models.load_model(paths[1])
    assert widget.models.source.count() == before + 2  # two files, both kept
    widget.models.source.setCurrentIndex(before)
    assert widget.models.model()[0] is first and str(tmp_path / "a") in widget.models.source.currentText()
    widget.models.source.setCurrentIndex(before + 1)
    assert widget.models.model()[0] is second
    w1, w2 = (next(iter(m.state_dict().values())) for m in (first, second))
    assert not torch.equal(w1, w2)
    shared_models(viewer).publish(UNet(depth=1, base_channels=4), {}, "training")
    assert widget.models.source.currentText() == TRAINED  # a new training: predict with the newest


def test_tta_box_follows_the_model(make_napari_viewer, tmp_path):
    """The test-time augmentation box shows what the selected model's training chose on
    validation (``postprocess["tta"]``), like the post-processing controls."""
    viewer = make_napari_viewer()
    viewer.add_image(synthetic_cells((40, 40), radius=6, seed=1)[0], name="img")
    widget = PredictWidget(viewer)
    net = UNet(depth=1, base_channels=4)
    widget.models.load_model(save_model(net, tmp_path / "tta.safetensors", postprocess={"tta": True}))
    assert widget.tta.isChecked()
    widget.models.load_model(save_model(net, tmp_path / "plain.safetensors"))
    assert not widget.tta.isChecked()


def test_the_mode_line_says_a_colour_layer_is_averaged_over_the_stored_scales(
        make_napari_viewer, qtbot, tmp_path):
    """A model that averages scales on colour images: Predict says so for an RGB layer (and
    predicts it so: the probabilities are those of the core at those scales), not for gray."""
    rgb = (np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)
    viewer = make_napari_viewer()
    viewer.add_image(rgb, name="he", rgb=True)
    viewer.add_image(rgb[..., 0], name="gray")
    widget = PredictWidget(viewer)
    widget.probabilities.setChecked(True)
    net = UNet(depth=1, base_channels=4)
    meta = {"postprocess": {"tta": False, "scales": {"colour": [1.0, 0.7, 1.4]}}}
    widget.models.load_model(save_model(net, tmp_path / "scales.safetensors", **meta))
    widget.image_combo.setCurrentText("he")
    widget._describe_mode()
    assert "scales 1, 0.7, 1.4 averaged" in widget.mode_label.text()
    _predict(widget, qtbot)
    expected = predict_image(widget.models.model()[0], rgb, channel_axis=-1,
                             metadata=widget.models.model()[1], scales=(1, 0.7, 1.4))
    np.testing.assert_allclose(np.asarray(viewer.layers["he probability"].data),
                               expected[1], atol=1e-6)
    widget.image_combo.setCurrentText("gray")
    widget._describe_mode()
    assert "scales" not in widget.mode_label.text()


def test_a_colour_layer_is_predicted_gray_by_the_models_rule(make_napari_viewer, qtbot):
    """An RGB layer and a one-channel model: the image is turned gray by the rule the model
    stores (here the hematoxylin stain), as the command line does, instead of refused."""
    from napari_unet.core.normalize import to_gray

    rgb = (np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)
    viewer = make_napari_viewer()
    viewer.add_image(rgb, name="he", rgb=True)
    viewer.add_image(to_gray(rgb, rule="stain"), name="gray")
    widget = PredictWidget(viewer)
    widget.probabilities.setChecked(True)
    norm = {"method": "percentile", "low": 1.0, "high": 99.8, "colour": "stain"}
    shared_models(viewer).publish(UNet(depth=1, base_channels=4, padding="same"),
                                  {"normalization": norm}, "test")
    probs = {}
    for name in ("he", "gray"):
        widget.image_combo.setCurrentText(name)
        _predict(widget, qtbot)
        probs[name] = np.asarray(viewer.layers[f"{name} probability"].data)
    assert probs["he"].shape == probs["gray"].shape
    np.testing.assert_allclose(probs["he"], probs["gray"], atol=1e-6)


def test_a_model_file_that_computes_garbage_is_a_notification(make_napari_viewer, tmp_path,
                                                              monkeypatch):
    """Load model… on a file with NaN weights: a notification saying the file is broken, and
    the model it would have replaced stays selected."""
    import torch

    from napari_unet.widgets import common, model_choice

    net = UNet(depth=1, base_channels=2)
    with torch.no_grad():
        net.head.bias.fill_(float("nan"))
    path = save_model(net, tmp_path / "nan.safetensors")
    seen = []
    monkeypatch.setattr(common, "show_error", seen.append)
    monkeypatch.setattr(model_choice.QFileDialog, "getOpenFileName",
                        staticmethod(lambda *a, **k: (str(path), "")))
    viewer = make_napari_viewer()
    widget = PredictWidget(viewer)
    before = (widget.models.source.count(), widget.models.source.currentIndex())
    widget.models._on_load()
    assert len(seen) == 1 and "nan.safetensors: 2 weight(s) of head.bias are NaN" in seen[0]
    assert "the file is broken" in seen[0]
    assert (widget.models.source.count(), widget.models.source.currentIndex()) == before
