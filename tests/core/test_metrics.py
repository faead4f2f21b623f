"""Metrics on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.metrics import (
    evaluate_segmentation,
    foreground_iou,
    instance_f1,
    instance_matching,
    pixel_error,
    rand_error,
    rand_scores,
)


def test_iou_and_pixel_error_hand_case():
    gt = np.array([[0, 1, 1, 0], [0, 1, 1, 0]])
    pred = np.array([[0, 0, 3, 3], [0, 0, 3, 3]])
    # intersection 2, union 6; 4 of 8 pixels differ
    assert foreground_iou(pred, gt) == pytest.approx(2 / 6)
    assert pixel_error(pred, gt) == pytest.approx(4 / 8)
    empty = np.zeros((2, 2), int)
    assert foreground_iou(empty, empty) == 1.0
    assert pixel_error(empty, empty) == 0.0


def test_rand_perfect_and_relabelled():
    gt = np.array([[1, 1, 0, 2, 2], [1, 1, 0, 2, 2]])
    assert rand_error(gt, gt) == 0.0
    assert rand_error(np.where(gt == 1, 7, np.where(gt == 2, 3, 0)), gt) == 0.0


def test_rand_split_merge_and_singletons_hand_case():
    gt = np.array([[1, 1, 1, 1], [2, 2, 2, 2]])
    pred = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    # n_11 = 4, n_21 = 2, two predicted-background singletons inside gt segment 2:
    # sum n_ij^2 = 16 + 4 + 2 = 22, sum gt^2 = 32, sum pred^2 = 36 + 2 = 38
    s = rand_scores(pred, gt, thin=False)
    assert s["rand_split"] == pytest.approx(22 / 32)
    assert s["rand_merge"] == pytest.approx(22 / 38)
    assert s["rand_error"] == pytest.approx(1 - 44 / 70)
    # thinned: the two background pixels join their nearest segment (1): one segment of 8
    # covering both true segments -> split 32/32, merge 32/64, F = 2/3
    t = rand_scores(pred, gt)
    assert (t["rand_split"], t["rand_merge"]) == (1.0, 0.5)
    assert t["rand_error"] == pytest.approx(1 / 3)


def test_rand_thinned_ignores_boundary_width():
    gt = np.array([[1, 1, 1, 0, 2, 2, 2]])
    pred = np.array([[1, 0, 0, 0, 0, 2, 2]])  # the right cut, but a 4-pixel-wide membrane
    # thinned: positions 1, 2 are nearest to 1, positions 3, 4 to 2 -> exactly gt's cells
    assert rand_error(pred, gt) == 0.0
    # un-thinned on gt's 6 foreground pixels: n_11 = 1, n_22 = 2 and 3 singletons:
    # sum n^2 = 1 + 4 + 3 = 8, gt 9 + 9 = 18, pred 1 + 4 + 3 = 8 -> F = 2(8/18)/(8/18 + 1)
    assert rand_error(pred, gt, thin=False) == pytest.approx(1 - 16 / 26)


def test_rand_thinned_can_merge_through_a_gap():
    gt = np.array([[1, 1, 0, 2, 2]])
    pred = np.array([[1, 1, 1, 0, 0]])  # cell 2 missed: thinning grows segment 1 over it
    assert rand_error(pred, gt) == pytest.approx(1 / 3)  # split 1, merge 8/16
    # un-thinned: 2 singletons: sum n^2 = 4 + 2, gt 8, pred 4 + 2 -> split 3/4, merge 1
    assert rand_error(pred, gt, thin=False) == pytest.approx(1 / 7)
    # no predicted segment: nothing to grow, every pixel a singleton either way
    none = np.zeros_like(gt)
    assert rand_error(none, gt) == rand_error(none, gt, thin=False) == pytest.approx(
        1 - 2 * (4 / 8) / (4 / 8 + 1)
    )


def test_rand_ignores_ground_truth_background():
    gt = np.array([[1, 1, 0, 0]])
    pred_a = np.array([[1, 1, 0, 0]])
    pred_b = np.array([[1, 1, 1, 5]])  # differs only where gt is background
    assert rand_error(pred_a, gt) == rand_error(pred_b, gt) == 0.0


def test_rand_merge_of_two_cells():
    gt = np.array([[1, 1, 0, 2, 2]])
    pred = np.array([[1, 1, 1, 1, 1]])
    # restricted to gt foreground: one predicted segment of 4 covering two of 2
    # sum n^2 = 8, sum gt^2 = 8, sum pred^2 = 16 -> split 1, merge 0.5, F = 2/3
    s = rand_scores(pred, gt)
    assert (s["rand_split"], s["rand_merge"]) == (1.0, 0.5)
    assert s["rand_error"] == pytest.approx(1 / 3)


def test_binary_masks_become_components():
    # ISBI style: 255 = cell, two cells separated by a membrane column
    gt = np.array([[255, 255, 0, 255], [255, 255, 0, 255]], np.uint8)
    pred_merged = np.array([[255, 255, 255, 255], [255, 255, 0, 255]], np.uint8)
    assert rand_error(gt, gt) == 0.0
    # the prediction merges the two cells: sum n^2 = 16 + 4 = 20, gt 20, pred 36
    assert rand_error(pred_merged, gt) == pytest.approx(1 - 2 * 20 / (20 + 36))
    assert rand_scores(np.zeros_like(gt), np.zeros_like(gt))["rand_error"] == 0.0


def test_instance_f1_hand_case():
    gt = np.zeros((10, 10), int)
    gt[0:4, 0:4] = 1  # 16 px
    gt[6:10, 6:10] = 2  # 16 px
    pred = np.zeros_like(gt)
    pred[0:4, 0:3] = 1  # IoU 12/16 = 0.75 with gt 1
    pred[6:10, 8:10] = 2  # IoU 8/16 = 0.5 with gt 2: counts (>=)
    pred[5, 0:3] = 3  # a false positive
    m = instance_matching(pred, gt)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 0)
    assert m["f1"] == pytest.approx(4 / 5)
    pred[6:10, 8] = 0  # IoU 4/16 < 0.5: no longer a match
    m = instance_matching(pred, gt)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 2, 1)
    assert m["f1"] == pytest.approx(2 / (2 + 2 + 1))


def test_instance_one_to_one():
    gt = np.array([[1, 1, 2, 2]])
    pred = np.array([[1, 1, 1, 1]])  # IoU 0.5 with both: only one may match
    m = instance_matching(pred, gt)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 0, 1)
    assert instance_f1(np.zeros_like(gt), np.zeros_like(gt)) == 1.0
    assert instance_f1(np.zeros_like(gt), gt) == 0.0


def test_evaluate_and_errors():
    gt = np.array([[1, 1, 0, 2]])
    r = evaluate_segmentation(gt, gt)
    assert r["n_true"] == r["n_pred"] == 2 and r["instance_f1"] == 1.0
    with pytest.raises(ValueError, match="same shape"):
        foreground_iou(gt, gt[:, :2])
    with pytest.raises(TypeError, match="integer"):
        rand_error(gt.astype(float), gt)
    with pytest.raises(ValueError, match="threshold"):
        instance_f1(gt, gt, threshold=0)
