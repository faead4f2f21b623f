"""The annotation-budget curve: F1 on unseen images against the number of cells the user touched.

A simulated user (with the true labels) on DSB 2018 images of 520×696 (or 1024²) with 100+
nuclei, taken from the **train and validation** parts of ``benchmarks/splits.json`` (never its
test part):

0. Start: paint the 8 cells nearest the centre of the first loop image, train with the GUI
   defaults (the run folder and trainer the Train widget uses, as ``bench_loop.py``).
1. Rounds: predict the next loop image with the current model (the Predict widget's path: the
   cells' table with its ``confidence`` and the ranking ``core.review.review_table``), fix
   k = 8 items, press Continue (fine-tune on all annotations so far, sparse: only the fixed
   cells with their band and the rejected cells' background count). Fixing an item: the true
   masks of the true cells it covers (a wrong or missed cell made right, a right one accepted),
   or, where no true cell is, its pixels as background (a false cell rejected).
2. After Start and each round: F1@0.5 of the current model on the unseen images (mean).

Strategies at the same budget, sharing each seed's Start model: ``suggest`` (the first k of
the model's own ranking), ``random`` (k predicted cells at random), ``oracle`` (the k true
cells the prediction matches worst, missed ones first: ``bench_loop.py``'s user, who needs the
truth). Also per round: the ranking's AUC on the corrected image (wrong = a predicted cell not
matched at IoU 0.5).

The JSON (``--json``) holds every curve (per round: cells touched, F1 per unseen image and
their mean, the AUC, steps, seconds of training, of the prediction with its review and of the
scoring, which model the keep rule delivered) and per set (``summary``; over all sets
``summary_all_sets``) per strategy: F1 per round (mean, std, min, max over the seeds),
cells touched, AUC, steps, training seconds, the rounds that kept the previous model, the
falls of more than 0.01 and the seeds whose last round is above Start; ``suggest-random`` and
``suggest-oracle``: the same seed's difference per round. Also the wall time and the load.

    python benchmarks/bench_budget.py --seeds 3 --sets 2 --json budget.json   # the issue's run
    python benchmarks/bench_budget.py --steps 5 --rounds 1 --seeds 1 --sets 1   # a smoke test

Each model is also scored with one fixed post-processing (``fixed_settings``, the choice's
first candidate: ``f1_unseen_fixed``, ``summary_fixed``): the models' own are chosen on the
validation band of what is annotated, a few cells with sparse fixes, and move the curve by
more than the weights do. ``--rescore RUN.json --json OUT.json`` adds it to a finished run.

``--oracle-seeds N`` runs the oracle (a reference) on the first N seeds only;
``--start-steps`` / ``--round-steps`` cap Start's and each round's steps (default the GUI's,
1500 on a CPU, within ``--start-minutes`` / ``--round-minutes``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections import deque
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_loop  # noqa: E402
import dsb_split  # noqa: E402

STRATEGIES = ("suggest", "random", "oracle")


def image_sets(n_sets: int, *, loop: int = 4, unseen: int = 2, min_cells: int = 100):
    """``n_sets`` disjoint sets of ``loop`` + ``unseen`` ids: train/validation images of
    520×696 or 1024×1024 with at least ``min_cells`` nuclei, in id order."""
    import imageio.v3 as iio
    import tifffile

    s = dsb_split.split()
    found = []
    for i in sorted(s["train"] + s["validation"]):
        shape = iio.improps(dsb_split.image_path(i)).shape[:2]
        if tuple(shape) in ((520, 696), (1024, 1024)):
            truth = tifffile.imread(dsb_split.label_path(i))
            if len(np.unique(truth)) - 1 >= min_cells:
                found.append(i)
        if len(found) >= n_sets * (loop + unseen):
            break
    size = loop + unseen
    if len(found) < n_sets * size:
        raise SystemExit(f"--sets: {len(found)} images of 100+ nuclei, {n_sets * size} needed")
    return [(found[k * size: k * size + loop], found[k * size + loop: (k + 1) * size])
            for k in range(n_sets)]


def read(i: str):
    import tifffile

    return dsb_split.read_gray(dsb_split.image_path(i)), tifffile.imread(dsb_split.label_path(i))


def predict_review(model, meta, image):
    """The Predict widget's result: labels, foreground probability, the ranked review."""
    from napari_unet.core.measure import confidence_maps, measure_cells
    from napari_unet.core.predict.segment import iter_segment
    from napari_unet.core.review import review_table

    ev = deque(iter_segment(model, image, metadata=meta, device="cpu"), maxlen=1)[0]
    maps = confidence_maps(ev.result, flip_std=ev.flip_std)
    table = measure_cells(ev.labels, maps=maps)
    return ev.labels, maps["mean_probability"], table, review_table(table, ev.labels,
                                                                     maps["mean_probability"])


def region_of(row, labels, prob) -> np.ndarray:
    """The pixels of a review row: a predicted cell, or a likely miss's blob."""
    if row["kind"] == "cell":
        return labels == int(row["label"])
    box = np.zeros(labels.shape, bool)
    box[int(row["bbox_y0"]):int(row["bbox_y1"]), int(row["bbox_x0"]):int(row["bbox_x1"])] = True
    return box & (prob >= 0.5) & (labels == 0)


def covered_cells(region, truth) -> list[int]:
    """The true cells a region covers: a fifth of the region, or half of the cell."""
    ids, counts = np.unique(truth[region], return_counts=True)
    return [int(i) for i, c in zip(ids, counts, strict=True)
            if i and (c >= 0.2 * region.sum() or c >= 0.5 * np.sum(truth == i))]


def fix(region, truth, annotation, background) -> dict:
    """The user makes ``region`` right: the true cells it covers (a fifth of it, or half of
    the cell) take their true masks; with none, it is a false cell, rejected: its pixels
    outside every true cell become background (a sliver of a true cell it overlaps stays
    unannotated, as a user's background stroke would leave the cell alone). Returns what was
    done: ``outcome`` (``accepted``: one true cell, ``corrected``: several, ``rejected``) and
    the pixels written."""
    keep = covered_cells(region, truth)
    if not keep:
        empty = region & (truth == 0)
        annotation[empty] = 0
        background[empty] = 1
        return {"outcome": "rejected", "background_px": int(empty.sum())}
    for i in keep:
        cell = truth == i
        annotation[cell] = int(annotation.max()) + 1
        background[cell] = 0
    return {"outcome": "accepted" if len(keep) == 1 else "corrected", "true_cells": len(keep),
            "cell_px": int(np.isin(truth, keep).sum())}


def pick(strategy, review, labels, prob, truth, k, rng):
    """The k regions the user fixes, and what each was (``kind``: ``cell`` / ``miss`` /
    ``true`` for the oracle's; the review's ``confidence`` and ``reason`` where it has them)."""
    if strategy == "suggest":
        rows = list(review.head(k).itertuples(index=False))
        return ([region_of(r._asdict(), labels, prob) for r in rows],
                [{"kind": r.kind, "label": int(r.label), "confidence": round(float(r.confidence), 4),
                  "reason": r.reason} for r in rows])
    if strategy == "random":
        ids = np.unique(labels[labels > 0])
        chosen = rng.choice(ids, min(k, ids.size), replace=False)
        return [labels == i for i in chosen], [{"kind": "cell", "label": int(i)} for i in chosen]
    from napari_unet.core.measure import match_cells

    m = match_cells(labels, truth)  # the oracle: the true cells matched worst (IoU with the
    worst = m.sort_values("iou", kind="stable")["true_label"].to_numpy()[:k]  # best cell)
    return [truth == i for i in worst], [{"kind": "true", "label": int(i)} for i in worst]


def item_facts(region, image, truth, prob) -> dict:
    """What a fixed item looked like: its pixels, its mean probability and its brightness
    relative to the image's true cells (their median of per-cell means; 1: a typical cell)."""
    cells = truth > 0
    typical = float(np.median(image[cells])) if cells.any() else float("nan")
    inside = image[region]
    return {"px": int(region.sum()),
            "probability": round(float(prob[region].mean()), 3) if region.any() else None,
            "brightness": round(float(inside.mean()) / typical, 3) if inside.size else None}


def auc_of(table, labels, truth) -> float:
    from scipy.stats import rankdata

    from napari_unet.core.measure import match_cells

    m = match_cells(labels, truth)
    right = set(m.loc[m["status"] == "matched", "pred_label"].tolist())
    wrong = ~table["label"].isin(right).to_numpy()
    if wrong.all() or not wrong.any():
        return float("nan")
    r = rankdata(-table["confidence"].to_numpy())
    n1, n0 = wrong.sum(), (~wrong).sum()
    return float((r[wrong].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def steps_of(args, kind: str) -> dict:
    """The step cap of Start (``kind="start"``) or of a round: ``--start-steps`` /
    ``--round-steps``, else ``--steps``, else none beside the GUI's own (1500 on a CPU)."""
    cap = getattr(args, f"{kind}_steps")
    cap = args.steps if cap is None else cap
    return {} if cap is None else {"steps": cap}


def fixed_settings():
    """One post-processing for every model: the first candidate of the end-of-run choice
    (threshold 0.5, confident cores at :func:`~napari_unet.core.training.choice.seed_level`
    of it, the other defaults). Scored beside each model's own, chosen on its validation band,
    it tells the weights' progress apart from the choice's."""
    from napari_unet.core.predict.postprocess import PostprocessSettings
    from napari_unet.core.training.choice import THRESHOLDS, seed_level

    return PostprocessSettings(threshold=THRESHOLDS[0], seeds=seed_level(THRESHOLDS[0]))


def pair_facts(annotations) -> dict:
    """Per annotated image (in the order of the pairs): its cells and its pixels of explicit
    background."""
    return {"pair_cells": [int(np.unique(a["labels"]).size - 1) for _, a in
                           sorted(annotations.items())],
            "pair_background_px": [int(np.count_nonzero(a["background"])) for _, a in
                                   sorted(annotations.items())]}


def decision(path) -> dict:
    """What the end of a Continue decided, from the model's metadata: its post-processing
    (``inherited``: kept from the model it started from, the band too small to choose on) with
    the band scores it was chosen on, and the keep rule's scores of both models."""
    from napari_unet.core.io import load_model

    _, meta = load_model(path)
    post = meta.get("postprocess") or {}
    kept = meta.get("kept") or {}
    return {"postprocess": {k: post.get(k) for k in ("threshold", "seeds", "min_size",
                                                    "watershed", "regrow", "inherited",
                                                    "chosen_on")},
            "kept_scores": {k: kept.get(k) for k in ("trained", "previous")}}


def score_unseen(path, unseen) -> dict:
    """F1@0.5 per unseen image and their mean, with the model's own post-processing
    (``f1_unseen``: what the user gets) and with :func:`fixed_settings` (``f1_unseen_fixed``),
    from the same probabilities."""
    from napari_unet.core.io import load_model
    from napari_unet.core.metrics import instance_f1
    from napari_unet.core.predict import segment

    model, meta = load_model(path)
    fixed, own, same = fixed_settings(), [], []
    for image, truth in unseen:
        prob, labels = segment(model, image, metadata=meta, device="cpu")
        own.append(float(instance_f1(labels, truth)))
        same.append(float(instance_f1(fixed.labels(prob), truth)))
    return {"f1_unseen": own, "f1_unseen_mean": float(np.mean(own)), "f1_unseen_fixed": same,
            "f1_unseen_fixed_mean": float(np.mean(same))}


def run_strategy(args, strategy, seed, loop, unseen, start, root):
    """Rounds of predict → fix k items → Continue from the seed's Start model."""
    from napari_unet.core.io import load_model
    from napari_unet.core.metrics import instance_f1
    from napari_unet.core.training import TrainingPair

    path, curve = start["path"], [dict(start["row"])]
    # each strategy annotates its own copies: the Start image's painted cells are shared
    annotations = {k: {n: a.copy() for n, a in v.items()} for k, v in start["annotations"].items()}
    rng = np.random.default_rng(seed)
    touched = args.paint
    for r in range(1, args.rounds + 1):
        k = r % len(loop)
        image, truth = loop[k]
        t0 = time.perf_counter()
        model, meta = load_model(path)
        labels, prob, table, review = predict_review(model, meta, image)
        predict_s = time.perf_counter() - t0
        ann = annotations.setdefault(k, {"labels": np.zeros(truth.shape, np.int32),
                                         "background": np.zeros(truth.shape, np.uint8)})
        regions, items = pick(strategy, review, labels, prob, truth, args.k, rng)
        for region, item in zip(regions, items, strict=True):
            item.update(item_facts(region, image, truth, prob))
            item.update(fix(region, truth, ann["labels"], ann["background"]))
        touched += len(regions)
        pairs = [TrainingPair(loop[j][0], a["labels"], background=a["background"], sparse=True)
                 for j, a in sorted(annotations.items())]
        config = bench_loop.fine_tune_config(time_limit=60 * args.round_minutes, seed=seed,
                                             **steps_of(args, "round"))
        path, info = bench_loop.train_run(root / strategy, pairs,
                                          [f"image{j}" for j in sorted(annotations)], config, path)
        t1 = time.perf_counter()
        scores = score_unseen(path, unseen)
        curve.append({"round": r, "image": k, "touched": touched, "fixed": len(regions),
                      "fixes": items, **pair_facts(annotations), **decision(path),
                      "f1_image_before": float(instance_f1(labels, truth)), **scores,
                      "auc": auc_of(table, labels, truth), "predict_review_s": round(predict_s, 2),
                      "score_s": round(time.perf_counter() - t1, 2), **info})
        row = curve[-1]
        print(f"  seed {seed} {strategy} round {r}: {touched} cells touched, F1 unseen "
              f"{row['f1_unseen_mean']:.3f} (fixed post-processing "
              f"{row['f1_unseen_fixed_mean']:.3f}), ranking AUC {row['auc']:.3f} ({row['steps']} steps,"
              f" {row['train_s']} s, {row.get('kept', '?')} kept; predict+review "
              f"{row['predict_review_s']} s, scoring {row['score_s']} s)", flush=True)
        outcomes = [f["outcome"] for f in items]
        post = row["postprocess"]
        print("    fixes: " + ", ".join(f"{outcomes.count(o)} {o}" for o in
                                        ("accepted", "corrected", "rejected"))
              + f" ({sum(f.get('background_px', 0) for f in items)} px background); pairs' "
              f"cells {row['pair_cells']}, background px {row['pair_background_px']}; "
              f"post-processing threshold {post['threshold']} cores {post['seeds']} min size "
              f"{post['min_size']}{' (inherited)' if post['inherited'] else ''}; "
              f"{row.get('kept_message', '')}", flush=True)
    return curve


def run_set(args, ids_loop, ids_unseen, seed, root):
    """One seed on one image set: Start, then every strategy's rounds from the same Start."""
    loop, unseen = [read(i) for i in ids_loop], [read(i) for i in ids_unseen]
    painted = bench_loop.painted_pair(*loop[0], args.paint)
    config = bench_loop.gui_config(time_limit=60 * args.start_minutes, seed=seed,
                                   **steps_of(args, "start"))
    path, info = bench_loop.train_run(root / "start", [painted], ["image0"], config, None)
    t1 = time.perf_counter()
    scores = score_unseen(path, unseen)
    row = {"round": 0, "touched": args.paint, **scores,
           "score_s": round(time.perf_counter() - t1, 2), **info}
    print(f"  seed {seed} Start: F1 unseen {row['f1_unseen_mean']:.3f} (fixed post-processing "
          f"{row['f1_unseen_fixed_mean']:.3f}; {info['steps']} steps, "
          f"{info['train_s']} s; scoring {row['score_s']} s)", flush=True)
    start = {"path": path, "row": row, "annotations": {0: {
        "labels": np.asarray(painted.labels, np.int32),
        "background": np.zeros(painted.labels.shape, np.uint8)}}}
    strategies = [s for s in args.strategies if s != "oracle" or seed < args.oracle_seeds]
    return {s: run_strategy(args, s, seed, loop, unseen, start, root) for s in strategies}


def _stats(values: np.ndarray) -> dict:
    """Per round (columns) over seeds (rows), NaN ignored."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {"mean": np.nanmean(values, 0).round(4).tolist(),
                "std": np.nanstd(values, 0).round(4).tolist(),
                "min": np.nanmin(values, 0).round(4).tolist(),
                "max": np.nanmax(values, 0).round(4).tolist()}


def summarise(curves: list[dict], strategies, *, drop: float = 0.01,
              key: str = "f1_unseen_mean") -> dict:
    """Per strategy over the seeds that ran it: F1 on the unseen images per round (mean, std,
    min, max), cells touched, the ranking's AUC, steps, training seconds, how often the
    previous model was kept, the falls of more than ``drop`` and the seeds whose last round
    is above Start; and the paired differences (same seed) of ``suggest`` against ``random``
    and ``oracle`` per round. ``key``: the F1 summarised (``"f1_unseen_fixed_mean"``: with
    :func:`fixed_settings`)."""
    out = {}
    for s in strategies:
        runs = [c[s] for c in curves if s in c]
        if not runs:
            continue
        col = {name: np.array([[row.get(name, np.nan) for row in run] for run in runs], float)
               for name in (key, "touched", "auc", "steps", "train_s")}
        f1 = col[key]
        falls = f1[:, 1:] - f1[:, :-1]
        out[s] = {"seeds": len(runs), "f1": _stats(f1),
                  "touched": np.nanmean(col["touched"], 0).round(1).tolist(),
                  "auc": _stats(col["auc"][:, 1:]), "steps": _stats(col["steps"]),
                  "train_s": _stats(col["train_s"]),
                  "kept_previous": [sum(run[r].get("kept") == "previous" for run in runs)
                                    for r in range(f1.shape[1])],
                  "falls_over_drop": int(np.sum(falls < -drop)),
                  "largest_fall": round(max(0.0, float(-falls.min())), 4) if falls.size
                  else 0.0,
                  "last_above_start": int(np.sum(f1[:, -1] > f1[:, 0]))}
    for other in ("random", "oracle"):
        pairs = [(c["suggest"], c[other]) for c in curves if "suggest" in c and other in c]
        if pairs:
            diff = np.array([[a[key] - b[key] for a, b in
                              zip(x, y, strict=True)] for x, y in pairs])
            out[f"suggest-{other}"] = {"seeds": len(pairs), **_stats(diff)}
    return out


def summarise_sets(result: dict, strategies) -> None:
    """Each set's ``summary`` (the F1 the user gets) and ``summary_fixed`` (with
    :func:`fixed_settings`), printed; over all sets too where there are several."""
    every = []
    for n, one in enumerate(result["sets"]):
        every += one["curves"]
        one["summary"] = summarise(one["curves"], strategies)
        one["summary_fixed"] = summarise(one["curves"], strategies, key="f1_unseen_fixed_mean")
        for what, summary in (("", one["summary"]),
                              (", fixed post-processing", one["summary_fixed"])):
            for s in (s for s in strategies if s in summary):
                f = summary[s]["f1"]
                print(f"set {n} {s} ({summary[s]['seeds']} seeds{what}): " + " -> ".join(
                    f"{m:.3f}±{sd:.3f} ({t:g})" for m, sd, t in zip(
                        f["mean"], f["std"], summary[s]["touched"], strict=True)), flush=True)
    if len(result["sets"]) > 1:
        result["summary_all_sets"] = summarise(every, strategies)
        result["summary_fixed_all_sets"] = summarise(every, strategies,
                                                     key="f1_unseen_fixed_mean")


def rescore(path: Path, out: Path) -> None:
    """Score every model of a finished run (its JSON at ``path``, its run folders where they
    were) on its set's unseen images again, with its own post-processing and with
    :func:`fixed_settings`; the summaries again; written to ``out``."""
    result = json.loads(path.read_text())
    done: dict[str, dict] = {}
    for one in result["sets"]:
        unseen = [read(i) for i in one["unseen"]]
        for row in (row for c in one["curves"] for curve in c.values() for row in curve):
            if row["run"] not in done:
                done[row["run"]] = score_unseen(Path(row["run"]) / "model.safetensors", unseen)
            row.update(done[row["run"]])
    summarise_sets(result, [s for s in STRATEGIES
                            if any(s in c for one in result["sets"] for c in one["curves"])])
    result["rescored"] = str(path)
    out.write_text(json.dumps(result, indent=1, default=str))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", type=int, default=2)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed-list", type=int, nargs="+", metavar="SEED",
                   help="run these seeds only (e.g. one seed's fall again; default: "
                        "0 .. --seeds - 1)")
    p.add_argument("--oracle-seeds", type=int,
                   help="run the oracle on the first N seeds only (default: every seed)")
    p.add_argument("--rounds", type=int, default=4, help="rounds after Start (8 + 4×8 = 40)")
    p.add_argument("--paint", type=int, default=8)
    p.add_argument("--k", type=int, default=8, help="items fixed per round")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--start-minutes", type=float, default=2.0)
    p.add_argument("--round-minutes", type=float, default=2.0)
    p.add_argument("--steps", type=int,
                   help="step cap of every training (default: the GUI's, 1500 on a CPU)")
    p.add_argument("--start-steps", type=int, help="step cap of Start (default: --steps)")
    p.add_argument("--round-steps", type=int, help="step cap of each round (default: --steps)")
    p.add_argument("--runs", type=Path)
    p.add_argument("--json", type=Path)
    p.add_argument("--rescore", type=Path, metavar="JSON",
                   help="score the models of a finished run again (with the fixed "
                        "post-processing too) and write --json; trains nothing")
    args = p.parse_args(argv)
    if args.rescore:
        if not args.json:
            p.error("--rescore: give --json, the file to write")
        rescore(args.rescore, args.json)
        return 0
    seeds = range(args.seeds) if args.seed_list is None else args.seed_list
    if args.oracle_seeds is None:
        args.oracle_seeds = max(seeds) + 1
    t_all = time.perf_counter()
    load_before = os.getloadavg()
    root = args.runs or Path(tempfile.mkdtemp(prefix="bench_budget_"))
    result = {"benchmark": "bench_budget", "args": {k: str(v) for k, v in vars(args).items()},
              "cpu_count": os.cpu_count(), "platform": platform.platform(), "sets": []}
    for n, (ids_loop, ids_unseen) in enumerate(image_sets(args.sets)):
        print(f"set {n}: loop {ids_loop}, unseen {ids_unseen}", flush=True)
        t_set = time.perf_counter()
        curves = [run_set(args, ids_loop, ids_unseen, seed, root / f"set{n}" / f"seed{seed}")
                  for seed in seeds]
        result["sets"].append({"loop": ids_loop, "unseen": ids_unseen, "curves": curves,
                               "seconds": round(time.perf_counter() - t_set, 1)})
    summarise_sets(result, args.strategies)
    result["load_before"], result["load_after"] = load_before, os.getloadavg()
    result["seconds"] = round(time.perf_counter() - t_all, 1)
    print(f"load before {load_before}, after {result['load_after']}; {result['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
