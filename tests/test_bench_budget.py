"""benchmarks/bench_budget.py: the simulated user's fixes and the smoke run of the curve."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))  # its neighbours bench_loop and dsb_split
    try:
        spec = importlib.util.spec_from_file_location("bench_budget", BENCH / "bench_budget.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def test_a_rejected_false_cell_leaves_the_true_cells_alone(bench):
    truth = np.zeros((10, 12), np.int32)
    truth[1:5, 1:5] = 1
    truth[6:9, 6:11] = 2
    annotation = np.zeros_like(truth)
    background = np.zeros(truth.shape, np.uint8)
    false_cell = np.zeros(truth.shape, bool)
    false_cell[3:7, 4:9] = True  # mostly background, a sliver of both true cells
    bench.fix(false_cell, truth, annotation, background)
    assert background[false_cell & (truth == 0)].all()
    assert not background[truth > 0].any() and not annotation.any()

    merged = np.zeros(truth.shape, bool)
    merged[1:9, 1:11] = (truth > 0)[1:9, 1:11]  # a merge of both: each takes its true mask
    bench.fix(merged, truth, annotation, background)
    assert len(np.unique(annotation[truth == 1])) == 1 and (annotation[truth == 1] > 0).all()
    assert (annotation[truth == 2] > 0).all() and not (annotation[truth == 0]).any()
    assert not background[truth > 0].any()


def test_each_fix_says_what_the_user_did_and_what_it_was(bench):
    """The round's record of its fixes: a false cell rejected (its background pixels), a merge
    corrected (two true cells), a right cell accepted; its brightness against the true cells'."""
    truth = np.zeros((10, 12), np.int32)
    truth[1:5, 1:5], truth[6:9, 6:11] = 1, 2
    image = np.where(truth > 0, 100.0, 10.0).astype(np.float32)
    annotation, background = np.zeros_like(truth), np.zeros(truth.shape, np.uint8)
    false_cell = np.zeros(truth.shape, bool)
    false_cell[0, 6:12] = True
    assert bench.fix(false_cell, truth, annotation, background) == {
        "outcome": "rejected", "background_px": 6}
    assert bench.fix(truth > 0, truth, annotation, background)["outcome"] == "corrected"
    assert bench.fix(truth == 1, truth, annotation, background) == {
        "outcome": "accepted", "true_cells": 1, "cell_px": 16}
    facts = bench.item_facts(false_cell, image * 3, truth, image / 100)
    assert facts == {"px": 6, "probability": 0.1, "brightness": 0.1}
    regions, items = bench.pick("random", None, truth, None, truth, 1, np.random.default_rng(0))
    assert len(regions) == len(items) == 1 and items[0]["kind"] == "cell"


@pytest.mark.slow
def test_the_curve_runs_small(bench, tmp_path):
    """The smoke path: Start and one round of every strategy, two steps each, on the first
    image set of the shared DSB 2018 images, written as JSON with its summaries; then the
    same run scored again from its JSON and run folders (``--rescore``)."""
    if not (bench.dsb_split.DATA / "dsb2018" / "images").is_dir():
        pytest.skip("the shared DSB 2018 images are not here")
    out = tmp_path / "budget.json"
    assert bench.main(["--steps", "2", "--rounds", "1", "--seeds", "1", "--sets", "1",
                       "--runs", str(tmp_path / "runs"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    (one,) = result["sets"]
    (curves,) = one["curves"]
    assert set(curves) == set(one["summary"]) - {"suggest-random", "suggest-oracle"} == {
        "suggest", "random", "oracle"}
    for strategy, curve in curves.items():
        assert [row["round"] for row in curve] == [0, 1]
        assert curve[1]["touched"] == 8 + curve[1]["fixed"] and curve[1]["fixed"] <= 8
        assert all(row["steps"] == 2 for row in curve)
        assert curve[1]["kept"] in ("trained", "previous")
        summary = one["summary"][strategy]
        assert summary["seeds"] == 1 and len(summary["f1"]["mean"]) == 2
        assert 0.0 <= summary["f1"]["mean"][1] <= 1.0
    assert one["summary"]["suggest-random"]["mean"][0] == 0.0  # the same Start model
    assert result["seconds"] > 0 and len(result["load_before"]) == 3
    assert all(0.0 <= row["f1_unseen_fixed_mean"] <= 1.0
               for curve in curves.values() for row in curve)
    assert set(one["summary_fixed"]) == set(one["summary"])

    # a finished run scored again (the fixed post-processing added to an older run's JSON):
    # the same models give the same F1
    again = tmp_path / "again.json"
    assert bench.main(["--rescore", str(out), "--json", str(again)]) == 0
    rescored = json.loads(again.read_text())["sets"][0]
    for strategy, curve in curves.items():
        for before, after in zip(curve, rescored["curves"][0][strategy], strict=True):
            assert after["f1_unseen"] == before["f1_unseen"]
            assert after["f1_unseen_fixed"] == before["f1_unseen_fixed"]
        assert rescored["summary_fixed"][strategy]["f1"] == one["summary_fixed"][strategy]["f1"]
