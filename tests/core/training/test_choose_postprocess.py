"""The post-processing chosen on the validation regions (core.choice.choose_postprocess)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import napari_unet.core.training.choice as choice
import napari_unet.core.training.validation as validation
from napari_unet.core.model import UNet
from napari_unet.core.training import PreparedImage, ValidationRegion

H = W = 48


def _prepared(labels: np.ndarray) -> PreparedImage:
    pad = 2
    padded = tuple(n + 2 * pad for n in labels.shape)
    return PreparedImage(np.zeros((1, *padded), np.float32), np.zeros(padded, np.uint8),
                         np.ones(padded, np.float32), pad, labels.shape, labels,
                         np.ones(labels.shape, bool))


def _choose(monkeypatch, labels: np.ndarray, cell_prob: np.ndarray,
            tta_cell_prob: np.ndarray | None = None, region=None, **kwargs) -> dict:
    """choose_postprocess on patched probabilities: ``cell_prob`` for one pass, and
    ``tta_cell_prob`` (default the same) for the flips/rotations averaged; ``region`` the
    validation band (default the whole image)."""
    region = tuple(slice(0, n) for n in labels.shape) if region is None else region
    probs = {tta: np.stack([1.0 - p, p]).astype(np.float32) for tta, p in
             ((False, cell_prob), (True, cell_prob if tta_cell_prob is None else tta_cell_prob))}
    calls = []

    def region_probabilities(model, prep, region, *, tile, tta=False):
        calls.append(tta)
        return probs[tta][(slice(None), *region)]

    monkeypatch.setattr(validation, "region_probabilities", region_probabilities)
    sizes = tuple(s.stop - s.start for s in region)
    chosen = choice.choose_postprocess(  # the model's probabilities are patched above
        torch.nn.Identity(), [_prepared(labels)],
        [ValidationRegion(0, region, np.ones(sizes, np.float32))], tile=44, **kwargs,
    )
    # a 2D model (no ndim: 2D) is chosen on the flips/rotations averaged, unless told not to
    assert calls == [bool(kwargs.get("tta", True))]
    assert chosen is not None
    return chosen


def _two_cells():
    labels = np.zeros((H, W), np.int32)
    labels[8:40, 4:22] = 1
    labels[8:40, 26:44] = 2
    return labels


def test_threshold_never_below_the_decision_boundary(monkeypatch):
    """Cells whose 5-px rim is at 0.4: the band scores 0.3 best (whole cells, IoU 1), but a
    threshold below 0.5 merges cells through faint gaps a band cannot show, so it stays >= 0.5."""
    labels = _two_cells()
    core = np.zeros((H, W), bool)
    core[13:35, 9:17] = core[13:35, 31:39] = True
    cell_prob = np.where(core, 0.9, np.where(labels > 0, 0.4, 0.05))
    chosen = _choose(monkeypatch, labels, cell_prob)
    assert chosen["threshold"] >= 0.5


def test_a_higher_threshold_that_separates_cells_is_chosen(monkeypatch):
    """Two cells joined by a bridge at 0.72: 0.5 (confident cores above 0.7) merges them,
    0.55 (cores above 0.75) and above separate them."""
    labels = _two_cells()
    cell_prob = np.where(labels > 0, 0.95, 0.05)
    cell_prob[20:28, 22:26] = 0.72  # the bridge across the gap
    chosen = _choose(monkeypatch, labels, cell_prob)
    assert chosen["threshold"] >= 0.55
    assert chosen["seeds"] == choice.seed_level(chosen["threshold"])
    assert chosen["chosen_on"]["instance_f1"] == pytest.approx(1.0)


@pytest.mark.parametrize("cells", [(9, 9), (5, 8)])
def test_a_higher_threshold_needs_a_clear_gain(monkeypatch, cells):
    """Square cells, certain (0.95), and one false blob whose core is at 0.72: the decision
    boundary 0.5 (cores above 0.7) keeps the blob, 0.55 (cores above 0.75) drops it. Among
    81 cells that one false cell costs 0.006 of F1, less than the tolerance, so 0.5 is kept;
    among 40 it costs 0.012, and 0.55 is chosen."""
    rows, cols = cells
    labels = np.zeros((20 * rows + 20, 20 * cols), np.int32)
    for i in range(rows):
        for j in range(cols):
            labels[20 * i + 4:20 * i + 16, 20 * j + 4:20 * j + 16] = 1 + i * cols + j
    cell_prob = np.where(labels > 0, 0.95, 0.05)
    cell_prob[-14:-6, 6:14] = 0.72  # the false blob, 64 pixels: no minimum size removes it
    chosen = _choose(monkeypatch, labels, cell_prob)
    f1 = 2 * rows * cols / (2 * rows * cols + 1)  # with the blob
    assert (1.0 - f1 > choice.THRESHOLD_TOLERANCE) == (rows * cols < 50)
    assert chosen["threshold"] == (0.55 if rows * cols < 50 else 0.5)
    assert chosen["chosen_on"]["instance_f1"] == pytest.approx(
        1.0 if rows * cols < 50 else f1, abs=1e-4)


def test_the_lower_threshold_is_judged_with_the_chosen_minimum_size(monkeypatch):
    """A 40-pixel blob whose core is at 0.72 and a certain 30-pixel one: at the starting
    minimum size (10) only a threshold of 0.55 or more (cores above 0.75) drops the first,
    so the threshold is 0.55 when the minimum size 50 is found to drop both. With that size
    the decision boundary 0.5 scores as well, and is taken."""
    labels = _two_cells()
    cell_prob = np.where(labels > 0, 0.95, 0.05)
    cell_prob[42:46, 30:40] = 0.72
    cell_prob[42:45, 2:12] = 0.95
    chosen = _choose(monkeypatch, labels, cell_prob)
    assert chosen["min_size"] == 50 and chosen["threshold"] == 0.5
    assert chosen["seeds"] == pytest.approx(0.7)
    assert chosen["chosen_on"]["instance_f1"] == pytest.approx(1.0)


def test_confident_cores_split_a_faint_bridge_at_the_decision_boundary(monkeypatch):
    """A bridge at 0.6 joins two cells at 0.5; their cores (above 0.7) are apart, so the
    decision boundary itself keeps them apart: 0.5 is chosen, the cells grown to their full
    size, and a faint blob with no confident core (0.6 at most) is dropped."""
    labels = _two_cells()
    cell_prob = np.where(labels > 0, 0.95, 0.05)
    cell_prob[20:28, 22:26] = 0.6  # the bridge across the gap
    cell_prob[42:47, 2:12] = 0.6  # a blob the network is unsure of, not a cell
    chosen = _choose(monkeypatch, labels, cell_prob)
    assert chosen["threshold"] == 0.5 and chosen["seeds"] == pytest.approx(0.7)
    assert chosen["chosen_on"]["instance_f1"] == pytest.approx(1.0)
    settings = choice.PostprocessSettings.from_metadata({"postprocess": chosen})
    prob = np.stack([1.0 - cell_prob, cell_prob])
    cells = settings.labels(prob)
    assert cells[20, 10] != cells[20, 30] and not cells[44, 6]  # apart; the blob dropped
    plain = settings.replace(seeds=0.0).labels(prob)
    assert plain[20, 10] == plain[20, 30] and plain[44, 6]  # merged; the blob a cell


def test_2d_models_are_chosen_on_the_flips_and_store_them(monkeypatch):
    """One pass fills the gap between the two cells at their own 0.95 along its whole
    length (one block at every threshold and core level); the flips/rotations averaged see the
    gap. The settings are chosen on the flips' probabilities (both cells found) and the model
    asks for them; it asks for them even where they score worse on the band (which cannot see
    the merges they prevent on new images); ``tta=False`` chooses on one pass."""
    labels = _two_cells()
    cell_prob = np.where(labels > 0, 0.95, 0.05)
    bridged = cell_prob.copy()
    bridged[8:40, 22:26] = 0.95
    chosen = _choose(monkeypatch, labels, bridged, tta_cell_prob=cell_prob)
    assert chosen["tta"] is True
    assert chosen["chosen_on"]["instance_f1"] == pytest.approx(1.0)
    worse = _choose(monkeypatch, labels, cell_prob, tta_cell_prob=bridged)
    assert worse["tta"] is True and worse["chosen_on"]["instance_f1"] < 1.0
    plain = _choose(monkeypatch, labels, cell_prob, tta_cell_prob=bridged, tta=False)
    assert plain["tta"] is False and plain["chosen_on"]["instance_f1"] == pytest.approx(1.0)


def test_a_merge_just_outside_the_band_is_seen(monkeypatch):
    """Two cells cross the band (the bottom 16 rows); the bridge at 0.72 that joins them lies
    just above it. Cut at the band, the cells are apart at every threshold and 0.5 would do;
    post-processed with the band's context, as ``predict`` does on the whole image, 0.5 (cores
    above 0.7) merges them, so 0.55 or more is chosen. Without the context the merge is not
    seen."""
    labels = np.zeros((H, W), np.int32)
    labels[8:48, 2:16], labels[8:48, 20:34] = 1, 2
    labels[36:46, 38:46] = 3  # a third cell: the merged prediction is not one binary mask
    cell_prob = np.where(labels > 0, 0.95, 0.05)
    cell_prob[20:26, 16:20] = 0.72  # the bridge, 6 to 12 rows above the band
    band = (slice(32, 48), slice(0, W))
    chosen = _choose(monkeypatch, labels, cell_prob, region=band)
    assert chosen["threshold"] >= 0.55
    assert chosen["chosen_on"]["instance_f1"] == pytest.approx(1.0)
    blind = _choose(monkeypatch, labels, cell_prob, region=band, context=0)
    assert blind["threshold"] == 0.5


def test_context_region_stays_in_the_image():
    grown = validation.context_region((slice(30, 40), slice(0, 48)), (48, 48), context=1.0)
    assert grown == (slice(20, 48), slice(0, 48))
    assert choice.choice_cost(UNet(depth=1, base_channels=2)) == (2.0, 38.0)


def test_choice_cost_counts_the_context_area():
    """The Trainer's end-of-run reserve: 2 predictions (test-time augmentation's passes) and at most 38
    scorings (13 settings and the 6 lower thresholds, with and without cores) over the band
    grown to twice its area."""
    band = ValidationRegion(0, (slice(32, 48), slice(0, W)), None)
    passes, scorings = choice.choice_cost(UNet(depth=1, base_channels=2),
                                              [_prepared(_two_cells())], [band])
    assert passes == pytest.approx(4.0) and scorings == pytest.approx(76.0)


def test_the_reserve_covers_predictions_and_scorings():
    """Validation timings of 2 s predicting and 0.5 s scoring, a cost of (18, 104): the
    Trainer keeps 2 * 18 + 0.5 * 104 = 88 s for the choice, at most a quarter of a time
    budget."""
    from napari_unet.core.training.budget import BudgetClock
    from napari_unet.core.training.schedule import ValidationSchedule

    def schedule(time_limit):
        s = ValidationSchedule.__new__(ValidationSchedule)
        s.enabled, s.cost = True, (18.0, 104.0)
        s.timings, s.seconds = {"predict_s": 2.0, "score_s": 0.5}, 2.5
        s.budget = BudgetClock(steps=10, time_limit=time_limit)
        return s

    assert schedule(None).reserve() == pytest.approx(88.0)
    # with a time budget, at most a quarter of it (the choice then looks at fewer regions)
    assert schedule(200.0).reserve() == pytest.approx(50.0)


@pytest.mark.parametrize(("left", "chosen"), [(6.2, 1), (5.1, 1), (4.9, 0)])
def test_a_choice_a_little_short_of_time_still_looks_at_its_region(left, chosen):
    """One validation region whose choice takes about 6.7 s: with 6.2 s left (the plant-ovule
    run's shortfall) or 5.1 s, within a quarter of it, the choice still runs on the region;
    with 4.9 s it does not (the model keeps the defaults)."""
    from napari_unet.core.training.budget import BudgetClock
    from napari_unet.core.training.schedule import ValidationSchedule

    s = ValidationSchedule.__new__(ValidationSchedule)
    s.enabled, s.cost = True, (1.0, 10.0)
    s.timings, s.seconds = {"predict_s": 4.7, "score_s": 0.2}, 4.9
    now = [0.0]
    s.budget = BudgetClock(steps=None, time_limit=100.0, clock=lambda: now[0])
    s.budget.start()
    now[0] = 100.0 - left
    s.prepared = [_prepared(_two_cells())]
    s.regions = [ValidationRegion(0, (slice(0, H), slice(0, W)), None)]
    assert s.choice_s() == pytest.approx(6.7)
    assert len(s.chosen_regions()) == chosen


def test_cores_are_not_kept_where_they_drop_the_cells(monkeypatch):
    """A model unsure of its cells everywhere (0.65 inside each): every confident-core level
    (0.7 and up) drops both cells, so the band scores far better without the cores and the
    model stores none (seeds 0): it never predicts nothing where it found the cells."""
    labels = _two_cells()
    cell_prob = np.where(labels > 0, 0.65, 0.05)
    chosen = _choose(monkeypatch, labels, cell_prob)
    assert chosen["seeds"] == 0.0 and chosen["threshold"] < 0.65
    assert chosen["chosen_on"]["instance_f1"] == pytest.approx(1.0)


@given(n=st.integers(1, 40), share=st.floats(0.0, 1.5), side=st.integers(8, 40))
@settings(max_examples=60, deadline=None)
def test_choice_regions_fit_their_share(n, share, side):
    """The subset's grown area is at most ``share`` of all (all of them from 1 on), spread
    from the first region to the last, in order and without repeats; and one more evenly
    spread region would not have fitted."""
    shape = (side, 6 * n)
    prep = PreparedImage(np.zeros((1, *shape), np.float32), np.zeros(shape, np.uint8),
                         np.ones(shape, np.float32), 0, shape, np.zeros(shape, np.int32),
                         np.ones(shape, bool))
    bands = [ValidationRegion(0, (slice(0, side), slice(6 * i, 6 * i + 6)), None)
             for i in range(n)]
    chosen = choice.choice_regions([prep], bands, share=share)
    idx = [bands.index(r) for r in chosen]

    def grown(regs):
        return sum(choice.region_area(validation.context_region(r.region, prep.shape))
                   for r in regs)

    assert idx == sorted(set(idx))
    if share >= 1.0:
        assert chosen == bands
        return
    assert grown(chosen) <= share * grown(bands) + 1e-9
    if len(chosen) >= 2:
        assert idx[0] == 0 and idx[-1] == n - 1
    if len(chosen) < n - 1:  # one more (evenly spread) did not fit
        more = sorted({round(i) for i in np.linspace(0, n - 1, len(chosen) + 1)})
        assert grown([bands[i] for i in more]) > share * grown(bands)
