"""Input polarity: ``normalization["invert"]`` (a cut chosen from the training
images; ``"auto"``: 0.5) turns bright-background images (brightfield, H&E converted to gray: dark nuclei) into bright nuclei on a dark
background, as in fluorescence; stored by new gray models, applied wherever the metadata is
(training, predict, block-wise zarr, bioimage.io export); older metadata never inverts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from napari_unet.core.io.bioimageio import preprocessing
from napari_unet.core.model import UNet
from napari_unet.core.normalize import (
    inverted_channels,
    normalize,
    normalized_median,
    polarity_cut,
    stored_normalization,
)
from napari_unet.core.predict import predict_image, predict_to_zarr
from napari_unet.core.predict.images import normalizer
from napari_unet.core.synthetic import synthetic_cells
from napari_unet.core.training import TrainConfig, Trainer, TrainingPair, prepare_pairs

AUTO = {"method": "percentile", "low": 0.0, "high": 100.0, "invert": "auto"}
OLD = {"method": "percentile", "low": 1.0, "high": 99.8}  # as older models store it


def _images():
    """The same cells as fluorescence (bright on dark) and as brightfield (dark on bright)."""
    _, labels = synthetic_cells((64, 64), radius=8, seed=0)
    dark_bg = (20 + 200 * (labels > 0) + 10 * np.random.default_rng(0).random((64, 64)))
    return dark_bg.astype(np.float32), (255 - dark_bg).astype(np.float32), labels


def _net(in_channels=1):
    torch.manual_seed(0)
    return UNet(depth=1, base_channels=4, in_channels=in_channels).eval()


def test_auto_detects_a_bright_background_and_inverts_it_only():
    dark_bg, bright_bg, labels = _images()
    cells = labels > 0
    for image in (dark_bg, bright_bg):
        out = normalize(image, low=0, high=100, invert="auto")
        assert out[cells].mean() > 0.8 and out[~cells].mean() < 0.2  # bright cells, dark bg
    np.testing.assert_allclose(normalize(bright_bg, low=0, high=100, invert="auto"),
                               normalize(dark_bg, low=0, high=100), atol=1e-5)
    np.testing.assert_array_equal(normalize(dark_bg, invert="auto"), normalize(dark_bg))
    # per channel: a bright-background channel flips, a dark-background one does not
    both = normalize(np.stack([bright_bg, dark_bg]), channel_axis=0, invert="auto")
    assert both[0][cells].mean() > 0.8 and both[1][cells].mean() > 0.8
    assert inverted_channels([0.9, 0.1], [0, 0], [1, 1], "auto").tolist() == [True, False]
    assert normalize(bright_bg, low=0, high=100, invert=True)[cells].mean() > 0.8
    with pytest.raises(ValueError, match=r"invert.*'auto'"):
        normalize(dark_bg, invert="yes")


def test_new_gray_models_store_auto_and_train_on_the_inverted_image():
    _, bright_bg, labels = _images()
    config = TrainConfig(depth=1, base_channels=4, steps=1, validate_every=0, tile=60,
                         device="cpu")
    trainer = Trainer([(bright_bg, labels)], config)
    cut = trainer.metadata()["normalization"]["invert"]  # the cut chosen from the image
    assert isinstance(cut, float) and 0 < cut < normalized_median(bright_bg)[0]
    (prepared,) = prepare_pairs([TrainingPair(bright_bg, labels)], pad=0,
                                normalization=trainer.normalization)
    assert prepared.image[0][labels > 0].mean() > 0.8  # the network sees bright cells
    rgb = Trainer([TrainingPair(np.stack([bright_bg] * 3, -1), labels, channel_axis=-1)], config)
    assert "invert" not in rgb.metadata()["normalization"]  # colour input: unchanged default
    kept = Trainer([(bright_bg, labels)], TrainConfig(
        depth=1, base_channels=4, steps=1, validate_every=0, tile=60, device="cpu",
        normalization={**OLD, "invert": False}))
    assert kept.metadata()["normalization"]["invert"] is False  # an explicit choice stays


def test_the_cut_keeps_images_near_the_middle_on_one_side():
    # ISBI 2012 EM slices have normalised medians 0.49-0.55: with the fixed cut 0.5, slice 18
    # (0.486) was not inverted and the 19 others were; the trained cut keeps all one way
    rng = np.random.default_rng(0)
    images = [(rng.random((48, 48)) ** g).astype(np.float32) for g in (1.1, 1.0, 0.9, 0.85)]
    medians = [normalized_median(im)[0] for im in images]
    assert min(medians) < 0.5 < max(medians)  # the fixed cut would split them
    _, labels = synthetic_cells((48, 48), radius=8, seed=0)
    trainer = Trainer([(im, labels) for im in images], TrainConfig(
        depth=1, base_channels=4, steps=1, validate_every=0, tile=60, device="cpu"))
    cut = trainer.metadata()["normalization"]["invert"]
    flips = [bool(inverted_channels(m, 0.0, 1.0, cut)[()]) for m in medians]
    assert len(set(flips)) == 1 and min(abs(m - cut) for m in medians) > 0.2
    assert polarity_cut([0.05, 0.09, 0.6, 0.94]) == pytest.approx(0.345)  # DSB: between groups
    assert polarity_cut([]) == 0.5
    with pytest.raises(ValueError, match=r"invert.*cut in \[0, 1\]"):
        normalize(images[0], invert=1.5)


def test_predict_and_blocks_apply_the_stored_rule(tmp_path):
    dark_bg, bright_bg, _ = _images()
    net = _net()
    meta = {"normalization": AUTO}
    ref = predict_image(net, dark_bg, metadata=meta, tile_shape=(60, 60))
    inverted = predict_image(net, bright_bg, metadata=meta, tile_shape=(60, 60))
    np.testing.assert_allclose(inverted, ref, atol=1e-4)  # the same input once inverted
    out = predict_to_zarr(net, bright_bg, tmp_path / "o.zarr", metadata=meta, block=32,
                          tile_shape=(60, 60))
    np.testing.assert_allclose(zarr.open_group(str(out), mode="r")["probabilities"][:],
                               inverted, atol=1e-4)
    pre = preprocessing(stored_normalization(meta), bright_bg[None, None])
    assert [p["id"] for p in pre] == ["scale_range", "scale_linear"]
    assert [p["id"] for p in preprocessing(stored_normalization(meta), dark_bg[None, None])] \
        == ["scale_range"]


def test_old_metadata_never_inverts():
    _, bright_bg, _ = _images()
    assert stored_normalization({"normalization": OLD}) == {"low": 1.0, "high": 99.8}
    assert stored_normalization(None) == {"low": 1.0, "high": 99.8}
    np.testing.assert_array_equal(normalizer({"normalization": OLD}, channel_axis=None)(bright_bg),
                                  normalize(bright_bg))
    net = _net()
    old = predict_image(net, bright_bg, metadata={"normalization": OLD}, tile_shape=(60, 60))
    plain = predict_image(net, bright_bg, metadata={"normalization": {**OLD, "invert": False}},
                          tile_shape=(60, 60))
    auto = predict_image(net, bright_bg, metadata={"normalization": {**OLD, "invert": "auto"}},
                         tile_shape=(60, 60))
    np.testing.assert_array_equal(old, plain)
    assert not np.allclose(old, auto, atol=1e-4)
