"""Check these next: the least certain cells and the likely misses, ranked."""

import numpy as np

from napari_unet.core.measure import measure_cells
from napari_unet.core.review import likely_misses, review_table, suggestions
from napari_unet.core.synthetic import synthetic_cells


def _prob(truth):
    return np.where(truth > 0, 0.95, 0.05).astype(np.float32)


def test_a_blob_of_probability_without_a_cell_is_a_likely_miss_and_ranked():
    _, truth = synthetic_cells((128, 128), radius=10, seed=0)
    prob = _prob(truth)
    gone = int(truth.max())
    labels = np.where(truth == gone, 0, truth)  # the post-processing dropped one cell
    prob[truth == gone] = 0.65
    misses = likely_misses(labels, prob)
    assert len(misses) == 1
    cy, cx = np.argwhere(truth == gone).mean(0)
    row = misses.iloc[0]
    assert row["bbox_y0"] <= cy < row["bbox_y1"] and row["bbox_x0"] <= cx < row["bbox_x1"]
    table = measure_cells(labels, maps={"mean_probability": prob})
    review = review_table(table, labels, prob)
    assert review.iloc[0]["kind"] == "miss" and review["rank"].tolist()[:2] == [1, 2]
    assert len(review) == len(table) + 1
    assert review["confidence"].is_monotonic_increasing


def test_the_fringe_around_cells_is_no_miss():
    _, truth = synthetic_cells((96, 96), radius=10, seed=3)
    from scipy import ndimage as ndi

    prob = np.where(ndi.binary_dilation(truth > 0, iterations=2), 0.7, 0.05).astype(np.float32)
    prob[truth > 0] = 0.95
    assert len(likely_misses(truth, prob)) == 0


def test_suggestions_keeps_the_n_least_certain():
    _, truth = synthetic_cells((96, 96), radius=10, seed=5)
    table = measure_cells(truth, maps={"mean_probability": _prob(truth)})
    top = suggestions(table, n=3)
    assert len(top) == 3 and top["kind"].eq("cell").all()
    assert top["confidence"].max() <= table["confidence"].nsmallest(4).iloc[-1]


def test_a_clearly_wrong_cell_ranks_above_a_faint_small_miss():
    """Cells and likely misses on one scale (the chance of a fix): two merged cells, not
    convex and less probable, come before a faint blob of a quarter of a cell's size, which
    is as often a false alarm as a missed nucleus."""
    yy, xx = np.mgrid[:120, :120]
    labels = np.zeros((120, 120), np.int32)
    for k, (cy, cx) in enumerate([(20, 20), (20, 60), (20, 100), (60, 20), (60, 100),
                                  (100, 20), (100, 60), (100, 100)], 1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= 81] = k
    merged = ((yy - 60) ** 2 + (xx - 51) ** 2 <= 81) | ((yy - 60) ** 2 + (xx - 69) ** 2 <= 81)
    labels[merged] = 9
    prob = np.where(labels > 0, 0.95, 0.05).astype(np.float32)
    prob[merged] = 0.85
    prob[(yy - 40) ** 2 + (xx - 40) ** 2 <= 22] = 0.55  # faint, 69 px: a quarter of a cell
    table = measure_cells(labels, maps={"mean_probability": prob})
    review = review_table(table, labels, prob)
    assert review["kind"].tolist().count("miss") == 1
    assert (review.loc[0, "kind"], int(review.loc[0, "label"])) == ("cell", 9)
    assert review.loc[1, "kind"] == "miss"
    assert review["confidence"].is_monotonic_increasing
