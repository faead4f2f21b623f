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

The review list merges the cells with the likely misses (``core.review.likely_misses``); a
miss *needs a fix* when its blob covers a true cell that no predicted cell matched (a real
missed nucleus), otherwise it is a false alarm. For that list, ranked on each kind's own scale
(``merged_before``: the geometric mean of the terms, 1 − mean probability × relative size) and
as the product ranks it (``merged``: both on the fitted scale, 1 − the chance of a fix): the
AUC of "less confident → needs a fix" (all items, cells, misses) and per image how many of the
first 8 need a fix and how many are cells and misses. ``--items`` writes what the fit needs;
``--fit ITEMS`` fits the logistic map of each kind (the constants of ``core``) without
predicting, and scores it held out (fitted on the even-numbered images, scored on the odd).

    python benchmarks/bench_confidence.py --model M.safetensors --images 16 --json out.json
    python benchmarks/bench_confidence.py --model M.safetensors --images 80 --items items.json
    python benchmarks/bench_confidence.py --model M.safetensors --fit items.json
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
    from napari_unet.core.measure.confidence import (
        CONFIDENCE_TERMS,
        border_contrast,
        combine,
        confidence_terms,
    )
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
    done = matched["status"] == "matched"
    right = set(matched.loc[done, "pred_label"].tolist())
    out = {"terms": confidence_terms(table)}
    out["wrong"] = ~table["label"].isin(right).to_numpy()
    out["confidence"] = table["confidence"].to_numpy()
    # the scale before the calibration: the geometric mean of the chosen terms
    out["raw"] = combine(out["terms"], CONFIDENCE_TERMS)
    missed_truth = set(matched.loc[~done, "true_label"].tolist())
    out["misses"] = misses_of(labels, maps["mean_probability"], truth, missed_truth)
    return out, {"predict_s": t_predict, "confidence_s": t_conf, "table_s": t_table}


def misses_of(labels, prob, truth, missed_truth: set) -> dict:
    """The likely misses of one prediction (``core.review.likely_misses``): their
    ``confidence`` as the product computes it, ``raw`` (1 − mean probability × size relative
    to the median cell's: the scale before the calibration) and ``wrong``: the blob needs a
    fix, i.e. it covers a true cell that no predicted cell matched (a fifth of the blob or
    half of that cell: ``bench_budget.covered_cells``, the simulated user's rule); otherwise
    it is a false alarm."""
    from scipy import ndimage as ndi

    from bench_budget import covered_cells
    from napari_unet.core.measure.confidence import RING
    from napari_unet.core.review import likely_misses
    from napari_unet.core.review.suggest import MISS_THRESHOLD
    misses = likely_misses(labels, prob)
    _, sizes = np.unique(labels[labels > 0], return_counts=True)
    median = float(np.median(sizes)) if sizes.size else 0.0
    near = ndi.maximum_filter(labels > 0, size=2 * RING + 1)
    blobs, _ = ndi.label((prob >= MISS_THRESHOLD) & ~near)  # as likely_misses finds them
    wrong = []
    for row in misses.itertuples():
        box = blobs[row.bbox_y0:row.bbox_y1, row.bbox_x0:row.bbox_x1]
        ids, counts = np.unique(box[box > 0], return_counts=True)
        blob = blobs == ids[np.argmax(counts)]  # the blob that fills this box
        wrong.append(any(t in missed_truth for t in covered_cells(blob, truth)))
    relative = (np.minimum(1.0, misses["area"].to_numpy(float) / median) if median > 0
                else np.ones(len(misses)))
    return {"confidence": misses["confidence"].to_numpy(np.float64),
            "raw": 1.0 - misses["mean_probability"].to_numpy(np.float64) * relative,
            "wrong": np.asarray(wrong, bool)}


K = 8  # the length of the list a user works through in one round (bench_budget's k)


def merged(cells: list[dict], key: str, k: int = K) -> dict:
    """The review list of each image, cells and likely misses ranked together by ``key``
    (``raw``: each kind on its own scale, the list before the calibration; ``confidence``:
    as the product ranks them; ties keep the cells first, as ``core.review.suggestions``):
    the AUC of "less confident → needs a fix" over all items, of the cells and of the misses
    alone; per image the share of its first ``k`` that need a fix (mean over the images) and
    how many of them are cells and misses (summed over the images)."""
    scores, wrongs, kinds, top = [], [], [], []
    for c in cells:
        score = np.concatenate([c[key], c["misses"][key]])
        wrong = np.concatenate([c["wrong"], c["misses"]["wrong"]])
        miss = np.r_[np.zeros(len(c[key]), bool), np.ones(len(c["misses"][key]), bool)]
        first = np.argsort(score, kind="stable")[:k]
        top.append((wrong[first].mean() if len(first) else np.nan, wrong[first].sum(),
                    (~miss[first]).sum(), miss[first].sum()))
        scores.append(score)
        wrongs.append(wrong)
        kinds.append(miss)
    score, wrong, miss = (np.concatenate(v) for v in (scores, wrongs, kinds))
    top = np.array(top, float)
    return {"items": len(score), "need_fix": int(wrong.sum()),
            "misses": int(miss.sum()), "misses_need_fix": int(wrong[miss].sum()),
            "auc_merged": round(auc(-score, wrong), 4),
            "auc_cells": round(auc(-score[~miss], wrong[~miss]), 4),
            "auc_misses": round(auc(-score[miss], wrong[miss]), 4),
            f"top{k}_need_fix_share": round(float(np.nanmean(top[:, 0])), 4),
            f"top{k}_need_fix": int(top[:, 1].sum()), f"top{k}_cells": int(top[:, 2].sum()),
            f"top{k}_misses": int(top[:, 3].sum()), "images": len(cells)}


def _features(x: np.ndarray, form: str) -> np.ndarray:
    x = np.clip(np.asarray(x, np.float64), 1e-3, 1 - 1e-3)
    return np.log(x / (1 - x)) if form == "logit" else x


def fit_logistic(x: np.ndarray, wrong: np.ndarray, form: str) -> tuple[float, float]:
    """(a, b) of P(needs a fix) = 1 / (1 + exp(−(a + b·f(x)))) by maximum likelihood;
    f(x) = x (``linear``) or log(x / (1 − x)) (``logit``)."""
    from scipy.optimize import minimize

    f, y = _features(x, form), np.asarray(wrong, np.float64)

    def loss(ab):
        z = ab[0] + ab[1] * f
        return float(np.mean(np.logaddexp(0, z) - y * z))

    return tuple(float(v) for v in minimize(loss, np.zeros(2), method="BFGS").x)


def calibrated(x, ab, form) -> np.ndarray:
    """1 − the fitted chance of a fix: the confidence on the common scale."""
    return 1.0 / (1.0 + np.exp(ab[0] + ab[1] * _features(x, form)))


def log_loss(p_fix: np.ndarray, wrong: np.ndarray) -> float:
    p = np.clip(p_fix, 1e-6, 1 - 1e-6)
    return float(-np.mean(np.where(wrong, np.log(p), np.log(1 - p))))


KINDS = (("cell", lambda c: c), ("miss", lambda c: c["misses"]))
SPLITS = (("even->odd", slice(0, None, 2), slice(1, None, 2)),
          ("odd->even", slice(1, None, 2), slice(0, None, 2)))


def _stack(group: list[dict], get, key: str) -> np.ndarray:
    return np.concatenate([get(c)[key] for c in group])


def fit_scales(cells: list[dict]) -> dict:
    """Fit the logistic map of each kind's ``raw`` scale (both forms), on all images and on
    the even / odd ones scored on the others: the constants, the held-out log loss of each
    kind, and the merged list ranked by the fitted maps (held out, and in sample)."""
    def apply(group, ab, form):
        return [dict(c, fitted=calibrated(c["raw"], ab["cell"], form),
                     misses=dict(c["misses"], fitted=calibrated(c["misses"]["raw"],
                                                                ab["miss"], form)))
                for c in group]

    out = {}
    for form in ("linear", "logit"):
        whole = {kind: fit_logistic(_stack(cells, get, "raw"), _stack(cells, get, "wrong"), form)
                 for kind, get in KINDS}
        res = {kind: [round(v, 4) for v in ab] for kind, ab in whole.items()}
        held, losses = {}, {kind: [] for kind, _ in KINDS}
        for name, fit, test in SPLITS:
            ab = {kind: fit_logistic(_stack(cells[fit], get, "raw"),
                                     _stack(cells[fit], get, "wrong"), form)
                  for kind, get in KINDS}
            for kind, get in KINDS:
                p_fix = 1 - calibrated(_stack(cells[test], get, "raw"), ab[kind], form)
                losses[kind].append(log_loss(p_fix, _stack(cells[test], get, "wrong")))
            held[name] = merged(apply(cells[test], ab, form), "fitted")
        for kind, values in losses.items():
            res[f"{kind}_log_loss_held_out"] = round(float(np.mean(values)), 4)
        res["merged_in_sample"] = merged(apply(cells, {k: res[k] for k in whole}, form), "fitted")
        res["merged_held_out"] = held
        out[form] = res
    return out


def items_of(cells: list[dict]) -> list[dict]:
    """What the fit needs of each image, as JSON."""
    return [{"cells": {k: c[k].tolist() for k in ("raw", "confidence", "wrong")},
             "misses": {k: c["misses"][k].tolist() for k in ("raw", "confidence", "wrong")}}
            for c in cells]


def cells_from_items(items: list[dict]) -> list[dict]:
    def arrays(d):
        return {k: np.asarray(v, bool if k == "wrong" else np.float64) for k, v in d.items()}

    return [{**arrays(it["cells"]), "misses": arrays(it["misses"])} for it in items]


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
    p.add_argument("--items", type=Path,
                   help="also write every image's cells and likely misses (raw scale, "
                        "confidence, needs a fix) as JSON, for --fit")
    p.add_argument("--fit", type=Path, metavar="ITEMS",
                   help="predict nothing: fit each kind's scale on an --items file and print "
                        "the constants and the merged list's figures")
    args = p.parse_args()
    if args.fit:
        items = json.loads(args.fit.read_text())
        fits = {key: fit_scales(cells_from_items(v)) for key, v in items.items()}
        print(json.dumps(fits, indent=1))
        if args.json:
            args.json.write_text(json.dumps(fits, indent=1))
        return
    load_before = os.getloadavg()
    model, meta = load_model(args.model)
    ids = dsb_split.split()["validation"][: args.images]
    result = {"benchmark": "bench_confidence", "model": str(args.model), "images": ids,
              "chosen_terms": list(CONFIDENCE_TERMS)}
    from napari_unet.core.predict import segment

    # one prediction first, untimed: torch's one-time set-up is no prediction's cost
    segment(model, dsb_split.read_gray(dsb_split.image_path(ids[0])), metadata=meta,
            device="cpu")
    items = {}
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
        res["merged_before"] = merged(cells, "raw")  # each kind on its own scale
        res["merged"] = merged(cells, "confidence")  # as the product ranks them
        result[key] = res
        items[key] = items_of(cells)
        best = next(iter(res["auc"].items()))
        print(f"{key}: {res['cells']} cells, {res['wrong']} wrong; AUC of confidence "
              f"({'+'.join(CONFIDENCE_TERMS)}) {res['auc_confidence']:.3f}; best {best[0]} "
              f"{best[1]:.3f}; singles " + ", ".join(
                  f"{t} {res['auc'][t]:.3f}" for t in terms) + f"; held out {res['held_out']}; "
              f"wrong among the 8 least confident {res['wrong_among_8_least_confident']:.2f} "
              f"(all {res['wrong_among_all']:.2f}); confidence adds "
              f"{100 * res['time']['added']:.1f} % to the prediction", flush=True)
        for name in ("merged_before", "merged"):
            m = res[name]
            print(f"  {name}: {m['items']} items ({m['misses']} likely misses, "
                  f"{m['misses_need_fix']} real), AUC merged {m['auc_merged']:.3f}, cells "
                  f"{m['auc_cells']:.3f}, misses {m['auc_misses']:.3f}; first {K} per image: "
                  f"{m[f'top{K}_need_fix_share']:.2f} need a fix, {m[f'top{K}_cells']} cells / "
                  f"{m[f'top{K}_misses']} misses", flush=True)
    result["load_before"], result["load_after"] = load_before, os.getloadavg()
    print(f"load before {load_before}, after {result['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    if args.items:
        args.items.write_text(json.dumps(items))


if __name__ == "__main__":
    main()
