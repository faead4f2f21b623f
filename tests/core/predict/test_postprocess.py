"""Instance labels from probabilities: touching cells stay apart."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.core.predict import labels_from_probabilities
from napari_unet.core.predict.postprocess import fill_label_holes, remove_small_labels
from napari_unet.core.synthetic import synthetic_cells


def _borders(labels: np.ndarray) -> np.ndarray:
    """Pixels of a cell that touch another cell (the paper's separation borders)."""
    grown = ndi.grey_dilation(labels, size=3)
    shrunk = -ndi.grey_dilation(-np.where(labels > 0, labels, labels.max() + 1), size=3)
    return (labels > 0) & ((grown != labels) | (shrunk != labels)) & (grown > 0)


def _matches(true: np.ndarray, pred: np.ndarray) -> int:
    """Number of true cells matched one-to-one by a predicted label with IoU > 0.5."""
    n = 0
    for i in range(1, int(true.max()) + 1):
        cell = true == i
        ids, counts = np.unique(pred[cell], return_counts=True)
        j = ids[np.argmax(counts)]
        if j and (cell & (pred == j)).sum() / (cell | (pred == j)).sum() > 0.5:
            n += 1
    return n


def _disc_pair(gap: bool):
    yy, xx = np.mgrid[:60, :90]
    a = (yy - 30) ** 2 + (xx - 30) ** 2 < 18**2
    b = (yy - 30) ** 2 + (xx - 60) ** 2 < 18**2
    true = np.zeros((60, 90), np.int32)
    true[a], true[b & ~a] = 1, 2
    return true, (a | b) if not gap else (true > 0) & ~_borders(true)


def test_touching_synthetic_cells_are_separate_labels():
    _, true = synthetic_cells((128, 128), radius=10, seed=3)
    touching = _borders(true).sum()
    assert touching > 50  # the image has touching cells
    cell = (true > 0) & ~_borders(true)
    rng = np.random.default_rng(0)
    p1 = np.clip(np.where(cell, 0.9, 0.1) + rng.normal(0, 0.05, cell.shape), 0, 1)
    prob = np.stack([1 - p1, p1]).astype(np.float32)
    labels = labels_from_probabilities(prob, min_size=5)
    assert labels.dtype == np.int32
    n_true = int(true.max())
    assert _matches(true, labels) >= n_true - 1
    assert int(labels.max()) <= n_true + 1
    # without the borders the touching cells merge: the test is not trivially satisfied
    merged = labels_from_probabilities(np.stack([1 - (true > 0), true > 0]).astype(np.float32))
    assert int(merged.max()) < n_true


def test_missing_border_split_by_watershed():
    true, fg = _disc_pair(gap=False)
    prob = np.stack([1 - fg, fg]).astype(np.float32)
    assert int(labels_from_probabilities(prob).max()) == 1
    split = labels_from_probabilities(prob, watershed=True, min_distance=8)
    assert int(split.max()) == 2
    assert _matches(true, split) == 2
    single = np.zeros((40, 40), np.float32)
    single[10:30, 10:30] = 1
    one = labels_from_probabilities(np.stack([1 - single, single]), watershed=True, min_distance=5)
    assert int(one.max()) == 1


def test_three_class_interior_seeds_grow_into_borders():
    true, _ = _disc_pair(gap=False)
    border = _borders(true) | ((true > 0) & (ndi.distance_transform_edt(true > 0) <= 2))
    interior = (true > 0) & ~border
    prob = np.stack([true == 0, interior, border]).astype(np.float32) * 0.9 + 0.1 / 3
    labels = labels_from_probabilities(prob)
    assert int(labels.max()) == 2
    assert ((labels > 0) == (true > 0)).mean() > 0.99
    assert _matches(true, labels) == 2
    arg = labels_from_probabilities(prob, argmax=True)
    np.testing.assert_array_equal(arg, labels)


def test_holes_filled_small_objects_removed_threshold():
    p1 = np.zeros((30, 30), np.float32)
    p1[5:15, 5:15] = 0.8
    p1[9, 9] = 0.0  # a hole
    p1[25, 25] = 0.9  # one-pixel speck
    prob = np.stack([1 - p1, p1])
    labels = labels_from_probabilities(prob, min_size=4)
    assert int(labels.max()) == 1 and labels[9, 9] == 1 and labels[25, 25] == 0
    kept = labels_from_probabilities(prob, min_size=1, fill_holes=False)
    assert int(kept.max()) == 2 and kept[9, 9] == 0
    assert int(labels_from_probabilities(prob, threshold=0.85, min_size=1).max()) == 1


def test_helpers_and_errors():
    lab = np.zeros((7, 7), np.int32)
    lab[1:6, 1:6] = 3
    lab[3, 3] = 0
    lab[0, 0] = 5
    filled = fill_label_holes(lab)
    assert filled[3, 3] == 3
    np.testing.assert_array_equal(np.unique(remove_small_labels(filled, 2)), [0, 1])
    with pytest.raises(ValueError, match="2 or 3 classes"):
        labels_from_probabilities(np.zeros((4, 5, 5)))
    with pytest.raises(ValueError, match="threshold"):
        labels_from_probabilities(np.zeros((2, 5, 5)), threshold=2)


def test_regrowth_gives_the_separation_gap_back_to_the_touching_cells():
    true, cell = _disc_pair(gap=True)  # the prediction a border-trained net makes: gap at contact
    prob = np.stack([1 - cell, cell]).astype(np.float32)
    short = labels_from_probabilities(prob, regrow=0)
    grown = labels_from_probabilities(prob, regrow=1)
    assert int(short.max()) == int(grown.max()) == 2  # still two cells
    gap = (true > 0) & ~cell
    assert (short[gap] == 0).all() and (grown[gap] > 0).mean() > 0.8  # the gap is filled...
    # ...and hardly anything grows into true background (a few pixels of the notch at the rim)
    assert (grown[true == 0] > 0).sum() <= 0.25 * gap.sum()
    iou = [_mean_iou(true, lab) for lab in (short, grown)]
    assert iou[1] > iou[0]


def _mean_iou(true, pred):
    out = []
    for i in range(1, int(true.max()) + 1):
        ids, counts = np.unique(pred[true == i], return_counts=True)
        j = ids[np.argmax(counts)]
        out.append(((true == i) & (pred == j)).sum() / ((true == i) | (pred == j)).sum())
    return float(np.mean(out))


def test_confident_cores_split_and_drop():
    """Two cells joined by a bridge at 0.6 and a blob with a core of 4 pixels: at threshold
    0.5 without cores one merged cell and the blob; with cores above 0.8 (at least min_size
    pixels) two cells grown to their full extent, the blob dropped."""
    p1 = np.full((20, 30), 0.05, np.float32)
    p1[2:12, 2:12] = p1[2:12, 16:26] = 0.95
    p1[5:8, 12:16] = 0.6  # the bridge
    p1[14:19, 2:12] = 0.6
    p1[15:17, 5:7] = 0.9  # a core too small for min_size 10
    prob = np.stack([1 - p1, p1])
    plain = labels_from_probabilities(prob, min_size=10, regrow=0)
    assert plain.max() == 2 and plain[5, 5] == plain[5, 20]
    cored = labels_from_probabilities(prob, min_size=10, regrow=0, seeds=0.8)
    assert cored.max() == 2 and cored[5, 5] != cored[5, 20] and not cored[16, 5]
    assert np.array_equal(cored > 0, (p1 > 0.5) & (np.arange(20)[:, None] < 12))


def test_seeds_at_or_below_the_threshold_change_nothing():
    rng = np.random.default_rng(0)
    p1 = ndi.gaussian_filter(rng.random((40, 40)), 2).astype(np.float32)
    p1 = (p1 - p1.min()) / (p1.max() - p1.min())
    prob = np.stack([1 - p1, p1])
    for seeds in (0.0, 0.3, 0.5):
        assert np.array_equal(labels_from_probabilities(prob, seeds=seeds, min_size=3),
                              labels_from_probabilities(prob, min_size=3))


def test_three_class_seeds_are_confident_interiors():
    """3 classes: the interior cores above ``seeds`` seed the watershed into interior ∪
    border; an interior blob below it everywhere is dropped."""
    interior = np.zeros((20, 20), np.float32)
    interior[3:9, 3:9] = 0.9
    interior[12:17, 12:17] = 0.6
    border = np.zeros_like(interior)
    border[2:10, 2:10] = 1.0 - interior[2:10, 2:10]
    prob = np.stack([1 - interior - border, interior, border])
    both = labels_from_probabilities(prob, min_size=1, regrow=0)
    assert both.max() == 2
    cored = labels_from_probabilities(prob, min_size=1, regrow=0, seeds=0.8)
    assert cored.max() == 1 and cored[2, 2] == 1 and not cored[14, 14]


@pytest.mark.parametrize("shape", [(12, 12), (4, 12, 12)])
def test_watershed_with_nothing_left_is_empty(shape):
    """Cores drop every blob (none reaches 0.8): the watershed split has nothing to split."""
    p1 = np.full(shape, 0.6, np.float32)
    prob = np.stack([1 - p1, p1])
    out = labels_from_probabilities(prob, seeds=0.8, watershed=True, min_size=1)
    assert out.shape == shape and not out.any()
