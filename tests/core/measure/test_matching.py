"""Per-cell comparison with true labels: matched, merged, missed, and the same count of matches
as the instance F1."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from napari_unet.core.measure import match_cells
from napari_unet.core.metrics import instance_matching


def test_each_true_cell_has_its_status_iou_and_predicted_cell():
    truth = np.zeros((10, 20), np.int32)
    truth[1:5, 1:5], truth[1:5, 7:10], truth[1:5, 11:14], truth[7:9, 15:19] = 1, 2, 3, 4
    pred = np.zeros_like(truth)
    pred[1:5, 1:4] = 9      # 12 of 16 pixels: IoU 0.75
    pred[1:5, 7:14] = 11    # two true cells in one
    t = match_cells(pred, truth)
    assert t["status"].tolist() == ["matched", "merged", "merged", "missed"]
    assert t["pred_label"].tolist() == [9, 11, 11, 0]
    assert t["merged_with"].tolist() == ["", "3", "2", ""]
    assert t["iou"].tolist() == pytest.approx([0.75, 12 / 28, 12 / 28, 0.0])


def test_a_small_overlap_is_missed_not_merged():
    truth = np.zeros((6, 12), np.int32)
    truth[0:4, 0:4], truth[0:4, 6:10] = 1, 2
    pred = np.zeros_like(truth)
    pred[0:4, 3:7] = 5  # a quarter of each
    assert match_cells(pred, truth)["status"].tolist() == ["missed", "missed"]


def test_shapes_and_threshold_are_checked():
    with pytest.raises(ValueError, match="pred, truth"):
        match_cells(np.zeros((3, 3), int), np.zeros((3, 4), int))
    with pytest.raises(ValueError, match="threshold"):
        match_cells(np.zeros((3, 3), int), np.zeros((3, 3), int), threshold=0)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**16))
def test_matched_cells_are_the_true_positives_of_the_f1(seed):
    rng = np.random.default_rng(seed)
    ids = np.arange(1, 17).reshape(4, 4) * (rng.random((4, 4)) > 0.3)
    truth = np.kron(ids, np.ones((4, 4), int))
    lut = np.arange(17)
    lut[rng.integers(1, 17, 3)] = rng.integers(0, 17, 3)  # cells dropped or merged
    pred = np.roll(lut[truth], int(rng.integers(0, 3)), axis=1)
    for a in (pred, truth):  # one label value is read as a binary mask by instance_matching
        assume(len(np.unique(a[a > 0])) != 1)
    t = match_cells(pred, truth)
    assert t["true_label"].tolist() == np.unique(truth[truth > 0]).tolist()
    assert (t["status"] == "matched").sum() == instance_matching(pred, truth)["tp"]
