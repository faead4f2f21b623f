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

    python benchmarks/bench_budget.py --seeds 3 --sets 2 --json budget.json
    python benchmarks/bench_budget.py --steps 5 --rounds 1 --seeds 1 --sets 1   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
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


def fix(region, truth, annotation, background) -> None:
    """The user makes ``region`` right: the true cells it covers (a fifth of it, or half of
    the cell) take their true masks; with none, its pixels become background."""
    ids, counts = np.unique(truth[region], return_counts=True)
    keep = [int(i) for i, c in zip(ids, counts, strict=True)
            if i and (c >= 0.2 * region.sum() or c >= 0.5 * np.sum(truth == i))]
    if not keep:
        annotation[region] = 0
        background[region] = 1
        return
    for i in keep:
        cell = truth == i
        annotation[cell] = int(annotation.max()) + 1
        background[cell] = 0


def pick(strategy, review, labels, prob, truth, k, rng):
    """The k regions the user fixes."""
    if strategy == "suggest":
        return [region_of(r, labels, prob) for _, r in review.head(k).iterrows()]
    if strategy == "random":
        ids = np.unique(labels[labels > 0])
        return [labels == i for i in rng.choice(ids, min(k, ids.size), replace=False)]
    ids = np.unique(truth[truth > 0])  # the oracle: worst-matched true cells
    best = []
    for i in ids:
        cell = truth == i
        hits, counts = np.unique(labels[cell], return_counts=True)
        best.append(max([c / np.sum(cell | (labels == h)) for h, c in
                         zip(hits, counts, strict=True) if h] or [0.0]))
    worst = ids[np.argsort(best, kind="stable")[:k]]
    return [truth == i for i in worst]


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


def run_strategy(args, strategy, seed, loop, unseen, start, root):
    from napari_unet.core.io import load_model
    from napari_unet.core.metrics import instance_f1
    from napari_unet.core.training import TrainingPair

    path, annotations = start["path"], {k: dict(v) for k, v in start["annotations"].items()}
    curve = [dict(start["row"])]
    rng = np.random.default_rng(seed)
    steps = {} if args.steps is None else {"steps": args.steps}
    for r in range(1, args.rounds + 1):
        k = r % len(loop)
        image, truth = loop[k]
        model, meta = load_model(path)
        labels, prob, table, review = predict_review(model, meta, image)
        ann = annotations.setdefault(k, {"labels": np.zeros(truth.shape, np.int32),
                                         "background": np.zeros(truth.shape, np.uint8)})
        for region in pick(strategy, review, labels, prob, truth, args.k, rng):
            fix(region, truth, ann["labels"], ann["background"])
        pairs = [TrainingPair(loop[j][0], a["labels"], background=a["background"], sparse=True)
                 for j, a in sorted(annotations.items())]
        config = bench_loop.fine_tune_config(time_limit=60 * args.round_minutes, seed=seed,
                                             **steps)
        path, info = bench_loop.train_run(root / strategy, pairs,
                                          [f"image{j}" for j in sorted(annotations)], config, path)
        model, meta = load_model(path)
        f1 = [float(instance_f1(bench_loop.predict(model, meta, im), t)) for im, t in unseen]
        curve.append({"round": r, "touched": args.paint + r * args.k, "f1_unseen": f1,
                      "f1_unseen_mean": float(np.mean(f1)), "auc": auc_of(table, labels, truth),
                      **info})
        print(f"  seed {seed} {strategy} round {r}: {curve[-1]['touched']} cells touched, F1 "
              f"unseen {np.mean(f1):.3f}, ranking AUC {curve[-1]['auc']:.3f}", flush=True)
    return curve


def run_set(args, ids_loop, ids_unseen, seed, root):
    from napari_unet.core.io import load_model
    from napari_unet.core.metrics import instance_f1

    loop, unseen = [read(i) for i in ids_loop], [read(i) for i in ids_unseen]
    steps = {} if args.steps is None else {"steps": args.steps}
    painted = bench_loop.painted_pair(*loop[0], args.paint)
    config = bench_loop.gui_config(time_limit=60 * args.start_minutes, seed=seed, **steps)
    path, info = bench_loop.train_run(root / "start", [painted], ["image0"], config, None)
    model, meta = load_model(path)
    f1 = [float(instance_f1(bench_loop.predict(model, meta, im), t)) for im, t in unseen]
    row = {"round": 0, "touched": args.paint, "f1_unseen": f1, "f1_unseen_mean": float(np.mean(f1)),
           **info}
    print(f"  seed {seed} Start: F1 unseen {np.mean(f1):.3f}", flush=True)
    start = {"path": path, "row": row, "annotations": {0: {
        "labels": np.asarray(painted.labels, np.int32),
        "background": np.zeros(painted.labels.shape, np.uint8)}}}
    return {s: run_strategy(args, s, seed, loop, unseen, start, root) for s in args.strategies}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", type=int, default=2)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rounds", type=int, default=4, help="rounds after Start (8 + 4×8 = 40)")
    p.add_argument("--paint", type=int, default=8)
    p.add_argument("--k", type=int, default=8, help="items fixed per round")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--start-minutes", type=float, default=2.0)
    p.add_argument("--round-minutes", type=float, default=2.0)
    p.add_argument("--steps", type=int, help="step cap of every training (a smoke test)")
    p.add_argument("--runs", type=Path)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    load_before = os.getloadavg()
    root = args.runs or Path(tempfile.mkdtemp(prefix="bench_budget_"))
    result = {"benchmark": "bench_budget", "args": {k: str(v) for k, v in vars(args).items()},
              "sets": []}
    for n, (ids_loop, ids_unseen) in enumerate(image_sets(args.sets)):
        print(f"set {n}: loop {ids_loop}, unseen {ids_unseen}", flush=True)
        curves = [run_set(args, ids_loop, ids_unseen, seed, root / f"set{n}" / f"seed{seed}")
                  for seed in range(args.seeds)]
        summary = {}
        for s in args.strategies:
            f1 = np.array([[row["f1_unseen_mean"] for row in c[s]] for c in curves])
            summary[s] = {"touched": [row["touched"] for row in curves[0][s]],
                          "mean": f1.mean(0).round(4).tolist(), "std": f1.std(0).round(4).tolist()}
            print(f"set {n} {s}: " + " -> ".join(
                f"{m:.3f}±{sd:.3f} ({t})" for m, sd, t in zip(
                    summary[s]["mean"], summary[s]["std"], summary[s]["touched"], strict=True)))
        result["sets"].append({"loop": ids_loop, "unseen": ids_unseen, "curves": curves,
                               "summary": summary})
    result["load_before"], result["load_after"] = load_before, os.getloadavg()
    print(f"load before {load_before}, after {result['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
