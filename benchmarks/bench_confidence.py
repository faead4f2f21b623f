"""How well the per-cell confidence ranks the wrong cells first, and what it costs.

On DSB 2018 **validation** images of ``benchmarks/splits.json`` (never its test part: the
confidence's terms are chosen here), a model that never saw them predicts each image with and
without test-time augmentation (the one segmentation path, ``core.predict.segment``); every
predicted cell is *wrong* when it is not matched one-to-one to a true cell at IoU 0.5
(``core.measure.match_cells``). For every term of ``core.measure.confidence`` alone and every
combination of them (the geometric mean) it reports the AUC of "less confident → wrong" (0.5:
no better than chance, 1: every wrong cell below every right one), and which combination is
best on the even-numbered images scored on the odd ones and the other way round (so that the
choice is not judged on the images it was made on). Also: the share of wrong cells among the
8 least confident per image against the share among all cells, and the time the confidence
adds to a prediction (the cells' table with the confidence and the ranked review,
``review_table`` with its likely misses, minus the same table without the confidence).

    python benchmarks/bench_confidence.py --model M.safetensors --images 16 --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dsb_split


def auc(doubt: np.ndarray, wrong: np.ndarray) -> float:
    """P(a wrong cell's doubt > a right cell's), ties counting half (Mann-Whitney)."""
    from scipy.stats import rankdata

    n_wrong, n_right = int(wrong.sum()), int((~wrong).sum())
    if n_wrong == 0 or n_right == 0:
        return float("nan")
    ranks = rankdata(doubt)
    return float((ranks[wrong].sum() - n_wrong * (n_wrong + 1) / 2) / (n_wrong * n_right))


def cells_of(model, meta, image, truth, *, tta: bool) -> tuple[dict, dict]:
    """The cells' terms and wrong flags of one image, and the times (s)."""
    from napari_unet.core.measure import confidence_maps, match_cells, measure_cells
    from napari_unet.core.measure.confidence import border_contrast, confidence_terms
    from napari_unet.core.predict.segment import iter_segment
    from napari_unet.core.review import review_table

    t0 = time.perf_counter()
    ev = deque(iter_segment(model, image, metadata=meta, tta=tta, device="cpu"), maxlen=1)[0]
    t_predict = time.perf_counter() - t0
    prob, labels = ev.result, ev.labels
    # the confidence's cost: the cells' table with the confidence and the ranked review (the
    # Predict widget's path) minus the same table without it (measured anyway)
    t1 = time.perf_counter()
    measure_cells(labels)
    t_table = time.perf_counter() - t1
    t1 = time.perf_counter()
    maps = confidence_maps(prob, flip_std=ev.flip_std)
    table = measure_cells(labels, maps=maps)  # with the confidence: the product's path
    review_table(table, labels, maps["mean_probability"])
    t_conf = time.perf_counter() - t1 - t_table
    table["border_contrast"] = border_contrast(labels, maps["mean_probability"], table["label"])
    matched = match_cells(labels, truth)
    right = set(matched.loc[matched["status"] == "matched", "pred_label"].tolist())
    out = {"terms": confidence_terms(table)}
    out["wrong"] = ~table["label"].isin(right).to_numpy()
    out["confidence"] = table["confidence"].to_numpy()
    return out, {"predict_s": t_predict, "confidence_s": t_conf, "table_s": t_table}


def combos(terms) -> list[tuple[str, ...]]:
    return [c for k in range(1, len(terms) + 1) for c in itertools.combinations(terms, k)]


def score(cells: list[dict], names: tuple[str, ...]) -> float:
    from napari_unet.core.measure.confidence import combine

    values = np.concatenate([combine(c["terms"], names) for c in cells])
    wrong = np.concatenate([c["wrong"] for c in cells])
    return auc(-values, wrong)


def top_k_wrong(cells: list[dict], k: int = 8) -> tuple[float, float]:
    """Share of wrong cells among the k least confident per image, and among all cells."""
    top = [c["wrong"][np.argsort(c["confidence"], kind="stable")[:k]] for c in cells]
    return (float(np.mean(np.concatenate(top))),
            float(np.mean(np.concatenate([c["wrong"] for c in cells]))))


def evaluate(cells: list[dict], terms) -> dict:
    every = {"+".join(c): round(score(cells, c), 4) for c in combos(terms)}
    even, odd = cells[0::2], cells[1::2]
    held = {}
    for name, fit, test in (("even->odd", even, odd), ("odd->even", odd, even)):
        best = max(combos(terms), key=lambda c, fit=fit: score(fit, c))
        held[name] = {"chosen": "+".join(best), "auc_chosen_on": round(score(fit, best), 4),
                      "auc_held_out": round(score(test, best), 4)}
    wrong_top, wrong_all = top_k_wrong(cells)
    return {"cells": int(sum(len(c["wrong"]) for c in cells)),
            "wrong": int(sum(c["wrong"].sum() for c in cells)),
            "auc_confidence": round(auc(-np.concatenate([c["confidence"] for c in cells]),
                                        np.concatenate([c["wrong"] for c in cells])), 4),
            "auc": dict(sorted(every.items(), key=lambda kv: -kv[1])), "held_out": held,
            "wrong_among_8_least_confident": round(wrong_top, 4),
            "wrong_among_all": round(wrong_all, 4)}


def main() -> None:
    from napari_unet.core.io import load_model
    from napari_unet.core.measure.confidence import CONFIDENCE_TERMS, TERMS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True,
                   help="a model that never saw the validation images (e.g. bench_dsb.py "
                        "--train-set dsb2018-train --save M.safetensors)")
    p.add_argument("--images", type=int, default=16, help="the first N validation images")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    load_before = os.getloadavg()
    model, meta = load_model(args.model)
    ids = dsb_split.split()["validation"][: args.images]
    result = {"benchmark": "bench_confidence", "model": str(args.model), "images": ids,
              "chosen_terms": list(CONFIDENCE_TERMS)}
    from napari_unet.core.predict import segment

    # one prediction first, untimed: torch's one-time set-up is no prediction's cost
    segment(model, dsb_split.read_gray(dsb_split.image_path(ids[0])), metadata=meta,
            device="cpu")
    for tta in (False, True):
        cells, times = [], []
        for i in ids:
            import tifffile

            image = dsb_split.read_gray(dsb_split.image_path(i))
            truth = tifffile.imread(dsb_split.label_path(i))
            c, t = cells_of(model, meta, image, truth, tta=tta)
            cells.append(c)
            times.append(t)
        terms = TERMS if tta else tuple(t for t in TERMS if t != "agreement")
        res = evaluate(cells, terms)
        pred_s = sum(t["predict_s"] for t in times)
        conf_s = sum(t["confidence_s"] for t in times)
        res["time"] = {"predict_s": round(pred_s, 2), "confidence_s": round(conf_s, 3),
                       "table_without_confidence_s": round(sum(t["table_s"] for t in times), 3),
                       "added": round(conf_s / pred_s, 4)}
        key = "tta" if tta else "no_tta"
        result[key] = res
        best = next(iter(res["auc"].items()))
        print(f"{key}: {res['cells']} cells, {res['wrong']} wrong; AUC of confidence "
              f"({'+'.join(CONFIDENCE_TERMS)}) {res['auc_confidence']:.3f}; best {best[0]} "
              f"{best[1]:.3f}; singles " + ", ".join(
                  f"{t} {res['auc'][t]:.3f}" for t in terms) + f"; held out {res['held_out']}; "
              f"wrong among the 8 least confident {res['wrong_among_8_least_confident']:.2f} "
              f"(all {res['wrong_among_all']:.2f}); confidence adds "
              f"{100 * res['time']['added']:.1f} % to the prediction", flush=True)
    result["load_before"], result["load_after"] = load_before, os.getloadavg()
    print(f"load before {load_before}, after {result['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
