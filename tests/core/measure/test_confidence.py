"""The per-cell confidence: a column of every table measured with probabilities, in [0, 1],
low for the cells a prediction gets wrong (merged, cut out of a blob, doubtful)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_unet.core.measure import confidence_maps, measure_cells
from napari_unet.core.measure.confidence import TERMS, border_contrast, combine, confidence_terms
from napari_unet.core.synthetic import synthetic_cells


def _prob_of(truth: np.ndarray) -> np.ndarray:
    """A model's probability: cells 0.95 with a dip to 0.6 on the borders between cells."""
    from skimage.segmentation import find_boundaries

    prob = np.where(truth > 0, 0.95, 0.05).astype(np.float32)
    prob[find_boundaries(truth, mode="inner") & (truth > 0)] = 0.6
    return prob


def _merge_two(truth: np.ndarray) -> tuple[np.ndarray, int]:
    """The labels with the two largest touching cells merged into one (the broken cell)."""
    from skimage.segmentation import find_boundaries

    ids, sizes = np.unique(truth[truth > 0], return_counts=True)
    for a in ids[np.argsort(-sizes)]:
        ring = find_boundaries(truth == a, mode="outer")
        touching = np.unique(truth[ring & (truth > 0)])
        if touching.size:
            merged = np.where(truth == touching[0], a, truth)
            return merged, int(a)
    raise AssertionError("no touching cells")


def test_a_merged_cell_is_the_least_confident():
    _, truth = synthetic_cells((160, 160), radius=11, seed=4)
    prob = _prob_of(truth)
    labels, broken = _merge_two(truth)
    table = measure_cells(labels, maps=confidence_maps(np.stack([1 - prob, prob])))
    assert table["confidence"].between(0, 1).all()
    least = table.sort_values("confidence").iloc[0]
    assert int(least["label"]) == broken


def test_a_cell_cut_out_of_a_blob_has_little_border_contrast():
    labels = np.zeros((1, 12), int)
    labels[0, 2:5], labels[0, 8:11] = 1, 2
    prob = np.full((1, 12), 0.05, np.float32)
    prob[0, 2:5] = 0.95
    prob[0, 7:12] = 0.9  # cell 2 is a part of a larger blob of probability
    contrast = border_contrast(labels, prob, [1, 2])
    assert contrast[0] > 0.8 and contrast[1] < 0.5


def test_stacks_get_the_confidence_plane_by_plane():
    _, truth = synthetic_cells((64, 64), radius=10, seed=1)
    prob = _prob_of(truth)
    labels = np.stack([truth, np.where(truth > 0, truth + truth.max(), 0)])
    maps = confidence_maps(np.stack([1 - prob, prob])[None].repeat(2, 0), stacked=True)
    table = measure_cells(labels, maps=maps, planes=True)
    one = measure_cells(truth, maps={"mean_probability": prob})
    np.testing.assert_allclose(table["confidence"][: len(one)], one["confidence"], rtol=1e-6)
    np.testing.assert_allclose(table["confidence"][len(one):], one["confidence"], rtol=1e-6)


def test_the_flips_disagreement_lowers_the_confidence():
    _, truth = synthetic_cells((64, 64), radius=10, seed=2)
    prob = _prob_of(truth)
    spread = np.where(truth == truth.max(), 0.3, 0.0).astype(np.float32)
    maps = confidence_maps(np.stack([1 - prob, prob]), flip_std=spread)
    table = measure_cells(truth, maps=maps).set_index("label")
    terms = confidence_terms(table.reset_index())
    assert terms["agreement"].min() == pytest.approx(0.4)
    assert table["confidence"].idxmin() == truth.max()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=len(TERMS) * 3, max_size=len(TERMS) * 3),
       st.sampled_from(TERMS))
def test_the_combination_is_in_0_1_and_falls_with_any_term(values, term):
    import pandas as pd

    terms = pd.DataFrame(np.reshape(values, (3, len(TERMS))), columns=list(TERMS))
    conf = combine(terms, TERMS)
    assert ((conf >= 0) & (conf <= 1)).all()
    lower = terms.copy()
    lower[term] = lower[term] / 2
    assert (combine(lower, TERMS) <= conf + 1e-6).all()
