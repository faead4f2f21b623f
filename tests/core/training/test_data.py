"""Training data: pairs, channels, padding, validation split, biased patch sampling."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.normalize import DEFAULT_NORMALIZATION, normalize
from napari_unet.core.training import PatchSampler, TrainingPair, prepare_pairs, split_validation
from napari_unet.core.training.data import as_training_pairs, to_channels_first


def cells(h=40, w=40):
    labels = np.zeros((h, w), np.int32)
    labels[5:15, 5:15] = 1
    labels[5:15, 15:25] = 2  # touching cell 1
    labels[25:35, 20:30] = 3
    image = (labels > 0).astype(np.float32) * 100 + 10
    return image, labels


def test_pair_checks_and_channels():
    image, labels = cells()
    pair = TrainingPair(np.stack([image, image], -1), labels, channel_axis=-1)
    assert pair.shape == (40, 40) and pair.channels == 2
    assert to_channels_first(pair.image, -1).shape == (2, 40, 40)
    with pytest.raises(ValueError, match="channel_axis"):
        TrainingPair(np.zeros((2, 40, 40)), labels)
    with pytest.raises(ValueError, match="labels: expected the image's spatial shape"):
        TrainingPair(image, labels[:5])
    with pytest.raises(TypeError, match="real-valued"):
        TrainingPair(image.astype(complex), labels)
    with pytest.raises(ValueError, match="same number of channels"):
        as_training_pairs([pair, (image, labels)])
    with pytest.raises(TypeError, match="pairs\\[0\\]"):
        as_training_pairs(["x"])
    assert as_training_pairs([(image, labels, labels > 0)])[0].annotated.dtype == bool


def test_prepare_normalises_and_mirror_pads_small_images():
    image, labels = cells(20, 30)
    prep = prepare_pairs([TrainingPair(image * 7 + 3, labels)], pad=8, cover=50)[0]
    p = prep.pad
    assert p == max(8, 50 - 20)
    assert prep.image.shape == (1, 20 + 2 * p, 30 + 2 * p)
    inner = prep.image[0, p : p + 20, p : p + 30]
    lo, hi = DEFAULT_NORMALIZATION["low"], DEFAULT_NORMALIZATION["high"]
    np.testing.assert_allclose(inner, normalize(image * 7 + 3, low=lo, high=hi), atol=1e-5)
    # mirrored context around, zero weight outside the image
    np.testing.assert_array_equal(prep.image[0, p - 1, p : p + 30], inner[1])
    assert prep.weights[:p].max() == 0 and prep.weights[p : p + 20, p : p + 30].min() > 0
    # touching cells are separated by background in the target
    assert prep.target[p + 10, p + 14] == 0 and prep.target[p + 10, p + 10] == 1


def test_annotated_mask_limits_weights_and_sampling():
    image, labels = cells()
    annotated = np.zeros_like(labels, bool)
    annotated[25:35, 18:32] = True  # a corner with one cell
    prep = prepare_pairs([TrainingPair(image, labels, annotated)], pad=12)
    p = prep[0].pad
    weights = prep[0].weights[p : p + 40, p : p + 40]
    assert np.all(weights[~annotated] == 0) and np.all(weights[annotated] > 0)
    sampler = PatchSampler(prep, tile=16, rng=np.random.default_rng(0))
    img, tgt, wts = sampler.sample(50)
    assert img.shape == (50, 1, 16, 16) and tgt.dtype == np.int64 and wts.dtype == np.float32
    assert np.all(wts[:, 8, 8] > 0)  # every patch is centred on an annotated pixel


def test_a_pair_of_background_only_is_drawn_no_more_than_a_pair_with_cells():
    """A round of rejected blobs alone (explicit background, no cell) on a whole image beside
    a corner of painted cells: drawn at most as often as the painted pair, not in proportion
    to its ten times larger area (which taught background everywhere)."""
    image, labels = cells()
    corner = np.zeros_like(labels, bool)
    corner[25:35, 18:32] = True
    rejected = TrainingPair(image, np.zeros_like(labels), background=np.ones(labels.shape, np.uint8),
                            sparse=True)
    prep = prepare_pairs([TrainingPair(image, labels, corner), rejected], pad=12)
    p = prep[0].pad
    area = [int(np.sum(q.weights[p:p + 40, p:p + 40] > 0)) for q in prep]
    assert area[1] > 5 * area[0]
    sampler = PatchSampler(prep, tile=16, rng=np.random.default_rng(0))
    assert sampler._p[1] == pytest.approx(0.5)  # the draw's probabilities
    # pairs that all hold cells are drawn by their area, as before
    both = prepare_pairs([TrainingPair(image, labels, corner), TrainingPair(image, labels)], pad=12)
    counted = np.array([np.sum(q.weights > 0) for q in both], float)
    np.testing.assert_allclose(PatchSampler(both, tile=16, rng=np.random.default_rng(0))._p,
                               counted / counted.sum())


def test_sampler_refuses_nothing_annotated():
    image, labels = cells()
    prep = prepare_pairs([TrainingPair(image, labels, np.zeros_like(labels))], pad=12)
    with pytest.raises(ValueError, match="annotate"):
        PatchSampler(prep, tile=16, rng=np.random.default_rng(0))


def test_validation_band_is_held_out():
    image, labels = cells(40, 60)
    prep = prepare_pairs([TrainingPair(image, labels)], pad=10)
    regions = split_validation(prep, fraction=0.25)
    (reg,) = regions
    assert reg.region == (slice(0, 40), slice(44, 60))
    p = prep[0].pad
    assert prep[0].weights[p : p + 40, p + 44 : p + 60].max() == 0
    assert reg.weights.shape == (40, 16) and reg.weights.min() > 0
    assert split_validation(prep, fraction=0.0) == []
    with pytest.raises(ValueError, match="val_fraction"):
        split_validation(prep, fraction=1.5)


def test_validation_band_lies_inside_the_annotation():
    # the GUI bug: nuclei everywhere, right quarter not annotated; a band of the whole image
    # fell there, prediction and truth were both empty and validation said IoU 1, error 0
    import torch

    from napari_unet.core.model import UNet
    from napari_unet.core.training.validation import validate

    labels = np.zeros((64, 64), np.int32)
    for k, (y, x) in enumerate([(y, x) for y in range(4, 64, 12) for x in range(4, 64, 12)]):
        labels[y : y + 8, x : x + 8] = k + 1
    image = (labels > 0).astype(np.float32) * 100 + 10
    annotated = np.zeros((64, 64), bool)
    annotated[:, :48] = True
    torch.manual_seed(0)
    model = UNet(depth=1, base_channels=4, dropout=0.0)
    tile = model.valid_input_shape((36, 36))[0]
    prep = prepare_pairs([TrainingPair(image, labels, annotated)], pad=tile // 2 + 1, cover=tile)
    (reg,) = split_validation(prep, fraction=0.25)
    _ys, xs = reg.region
    assert xs.stop <= 48 and prep[0].annotated[reg.region].all()
    assert (prep[0].labels[reg.region] > 0).any() and (prep[0].labels[reg.region] == 0).any()
    m = validate(model, prep, [reg], tile=tile)
    # an untrained network cannot match the cells: the band is scored, not trivially perfect
    assert m["iou"] < 0.9 and m["pixel_error"] > 0.05
    # nothing annotated: nothing held out
    none = prepare_pairs([TrainingPair(image, labels, np.zeros_like(annotated))], pad=4)
    assert split_validation(none, fraction=0.25) == []
