"""The one-click edits: each writes the annotation and background it returns, never the
prediction, and never another annotated cell."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_unet.core.review import accept, cell_mask, merge, reject, split


def _two_discs():
    yy, xx = np.mgrid[:40, :60]
    a = (yy - 20) ** 2 + (xx - 20) ** 2 <= 100
    b = (yy - 20) ** 2 + (xx - 37) ** 2 <= 100
    pred = np.zeros((40, 60), np.int32)
    pred[a | b] = 7  # two nuclei predicted as one
    prob = np.where(a | b, 0.95, 0.05).astype(np.float32)
    prob[:, 28:30] = np.where(a | b, 0.55, 0.05)[:, 28:30]  # the valley between them
    return pred, prob, a, b


def test_split_cuts_a_merged_cell_along_the_valley_of_probability():
    pred, prob, _a, _b = _two_discs()
    before = pred.copy()
    ann = np.zeros_like(pred, np.uint16)
    mask, source = cell_mask(ann, pred, (20, 15))
    assert source == "prediction"
    out, bg, ids = split(ann, None, mask, [(20, 15), (20, 42)], prob)
    assert len(ids) == 2 and bg is None and out.dtype == np.uint16
    left, right = out == ids[0], out == ids[1]
    assert left[20, 10] and right[20, 45] and not (left & right).any()
    line = [c for c in range(21, 37) if out[20, c] == 0]  # the cut, in the valley
    assert line and all(27 <= c <= 30 for c in line)
    np.testing.assert_array_equal(pred, before)  # the prediction is only read


def test_accept_reject_and_merge():
    pred, _, a, b = _two_discs()
    pred = np.where(a, 3, np.where(b & ~a, 4, 0)).astype(np.int32)
    ann = np.zeros(pred.shape, np.uint16)
    ann[0:3, 0:3] = 9  # the user's own cell is never touched
    out, _, ids = accept(ann, None, pred == 3)
    assert ids == [10] and (out[pred == 3] == 10).all() and (out[0:3, 0:3] == 9).all()
    with pytest.raises(ValueError, match="annotated already"):
        accept(out, None, pred == 3)
    out2, bg2, _ = reject(out, None, cell_mask(out, pred, (20, 20))[0])
    assert (out2[pred == 3] == 0).all() and bg2[pred == 3].all() and bg2.sum() == (pred == 3).sum()
    merged, bg3, ids = merge(out2, bg2, pred == 3, pred == 4)
    cell = merged == ids[0]
    assert cell[pred > 0].all() and not bg3[cell].any() and (merged[0:3, 0:3] == 9).all()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_an_edit_changes_only_the_clicked_cell_and_its_gap(seed):
    from napari_unet.core.synthetic import synthetic_cells

    _, pred = synthetic_cells((48, 48), radius=8, seed=seed % 1000)
    rng = np.random.default_rng(seed)
    ids = np.unique(pred[pred > 0])
    if ids.size < 3:
        return
    keep, first, second = rng.choice(ids, 3, replace=False)
    ann = np.where(pred == keep, 1, 0).astype(np.uint16)
    for out, _bg, _ids in (accept(ann, None, pred == first), reject(ann, None, pred == first),
                           merge(ann, None, pred == first, pred == second)):
        assert not (out != ann)[pred == keep].any()
    _, bg, _ = reject(ann, None, pred == first)
    assert (bg > 0).sum() == (pred == first).sum() and bg[pred == first].all()
