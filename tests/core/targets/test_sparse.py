"""The sparse-annotation rule: what counts in the loss when a user paints a few cells."""

import numpy as np
import pytest

from napari_unet.core.targets import band_width, counted_area, describe_annotation
from napari_unet.core.training import PatchSampler, TrainingPair, prepare_pairs


def _two_touching_cells():
    labels = np.zeros((40, 60), np.int32)
    labels[10:20, 10:20] = 3
    labels[10:20, 20:30] = 5  # touches cell 3 along column 20
    return labels


def test_band_is_a_fraction_of_the_median_diameter():
    labels = _two_touching_cells()  # 10 x 10 cells: equivalent diameter 11.28
    assert band_width(labels, fraction=0.5) == 6
    assert band_width(labels, fraction=0.25) == 3
    assert band_width(labels, fraction=0.0) == 2  # never below the minimum
    with pytest.raises(ValueError, match="fraction"):
        band_width(labels, fraction=-1)


def test_sparse_counts_cells_and_a_band_only():
    labels = _two_touching_cells()
    counted = counted_area(labels, band_fraction=0.5)
    assert counted[labels > 0].all()
    assert counted[10:20, 4].all() and not counted[10:20, 3].any()  # band of 6 px on the left
    assert counted[15, 35] and not counted[15, 36]
    assert not counted[0, 59] and not counted[39, 59]  # far away: unknown, weight 0
    assert counted.sum() < labels.size / 2


def test_complete_labels_count_everywhere_and_background_adds():
    labels = _two_touching_cells()
    assert counted_area(labels, sparse=False).all()
    region = np.zeros(labels.shape, bool)
    region[:, :15] = True
    np.testing.assert_array_equal(counted_area(labels, annotated=region, sparse=False), region)
    background = np.zeros(labels.shape, np.uint8)
    background[35:, 50:] = 1
    counted = counted_area(labels, background=background)
    assert counted[35:, 50:].all() and not counted[30, 50]


def test_regions_are_complete_inside_and_cells_count_outside():
    labels = _two_touching_cells()
    region = np.zeros(labels.shape, bool)
    region[:, 40:] = True  # a region without the cells: complete inside (all background)
    counted = counted_area(labels, annotated=region)
    assert counted[:, 40:].all()
    assert counted[labels > 0].all()  # painted cells count wherever they are
    assert not counted[10:20, 5].any()  # with regions drawn, no band
    background = np.zeros(labels.shape, bool)
    background[0, 0] = True
    assert counted_area(labels, annotated=region, background=background)[0, 0]


def test_mask_errors_name_the_argument():
    labels = _two_touching_cells()
    with pytest.raises(ValueError, match="background"):
        counted_area(labels, background=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="annotated"):
        counted_area(labels, annotated=np.zeros((3, 3), bool))


def test_describe_annotation_counts_cells_and_pixels():
    labels = _two_touching_cells()
    info = describe_annotation(labels, band_fraction=0.5)
    assert info["rule"] == "band" and info["cells"] == 2 and info["band_px"] == 6
    assert info["counted_px"] == int(counted_area(labels, band_fraction=0.5).sum())
    assert "2 cells" in info["text"] and str(info["counted_px"]) in info["text"]
    region = np.zeros(labels.shape, bool)
    region[:20] = True
    assert describe_annotation(labels, annotated=region)["rule"] == "regions"
    assert describe_annotation(labels, sparse=False)["rule"] == "complete"
    bg = np.zeros(labels.shape, bool)
    bg[-1] = True
    assert describe_annotation(labels, background=bg)["background_px"] == 60


def test_sparse_pair_weights_touching_painted_cells_and_ignores_far_pixels():
    labels = _two_touching_cells()
    image = labels.astype(np.float32)
    dense = prepare_pairs([TrainingPair(image, labels)], pad=4)[0]
    sparse = prepare_pairs([TrainingPair(image, labels, sparse=True)], pad=4)[0]
    p = 4
    w_dense, w_sparse = dense.weights[p:-p, p:-p], sparse.weights[p:-p, p:-p]
    # far from the painted cells nothing counts (an unpainted cell there is unknown)
    assert (w_sparse[:, 40:] == 0).all() and (w_dense[:, 40:] > 0).all()
    # the separation border between the touching cells keeps its large border weight
    assert sparse.target[p + 15, p + 19] == 0 and sparse.target[p + 15, p + 20] == 0
    assert w_sparse[15, 19] > 5 * w_sparse[15, 12]
    np.testing.assert_array_equal(sparse.annotated, counted_area(labels))
    # patches are drawn around counted pixels only
    sampler = PatchSampler([prepare_pairs([TrainingPair(image, labels, sparse=True)],
                                          pad=9)[0]], tile=16, rng=np.random.default_rng(0))
    _, _, weights = sampler.sample(20)
    assert (weights[:, 8, 8] > 0).all()


def test_training_pair_background_field():
    labels = _two_touching_cells()
    bg = np.zeros(labels.shape, np.uint8)
    bg[0, :5] = 1
    pair = TrainingPair(labels.astype(float), labels, background=bg, sparse=True)
    assert pair.background.dtype == bool and pair.counted()[0, :5].all()
    with pytest.raises(ValueError, match="background"):
        TrainingPair(labels.astype(float), labels, background=bg[:3])
    # the positional order (image, labels, annotated, channel_axis) is unchanged
    assert TrainingPair(labels.astype(float), labels, None, None).sparse is False
