"""Which true cells a prediction found, per cell: matched, missed or merged, with the IoU.

A true cell is *matched* when it is paired one-to-one with a predicted cell overlapping it with
IoU ≥ ``threshold``, the pairs maximising the summed IoU (the true positives of
:func:`napari_unet.core.metrics.instance_matching`; above 0.5 an overlap is a match, at exactly
0.5 two true cells may tie for one predicted cell); otherwise it is *merged* when a predicted
cell covers at least half of it and at least half of another true cell (two cells predicted as
one), and *missed* when not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["match_cells"]


def _overlaps(pred: np.ndarray, truth: np.ndarray):
    """(true ids, pred ids, intersections) of every overlapping pair, and the cell sizes."""
    both = (pred > 0) & (truth > 0)
    pairs, inter = np.unique(np.stack([truth[both], pred[both]]), axis=1, return_counts=True)
    t_ids, t_size = np.unique(truth[truth > 0], return_counts=True)
    p_ids, p_size = np.unique(pred[pred > 0], return_counts=True)
    size_t = dict(zip(t_ids.tolist(), t_size.tolist(), strict=True))
    size_p = dict(zip(p_ids.tolist(), p_size.tolist(), strict=True))
    return pairs[0], pairs[1], inter, t_ids, size_t, size_p


def _one_to_one(t, p, iou, threshold) -> dict[int, int]:
    """True id → index of its pair, for the one-to-one pairs at IoU ≥ ``threshold`` with the
    largest summed IoU (Hungarian algorithm)."""
    from scipy.optimize import linear_sum_assignment

    keep = np.flatnonzero(iou >= threshold)
    if not len(keep):
        return {}
    rows, ri = np.unique(t[keep], return_inverse=True)
    cols, ci = np.unique(p[keep], return_inverse=True)
    m = np.zeros((len(rows), len(cols)))
    m[ri, ci] = iou[keep]
    index = {(a, b): k for a, b, k in zip(ri.tolist(), ci.tolist(), keep.tolist(), strict=True)}
    r, c = linear_sum_assignment(m, maximize=True)
    return {int(rows[a]): index[(a, b)] for a, b in zip(r.tolist(), c.tolist(), strict=True)
            if m[a, b] >= threshold}


def match_cells(pred: np.ndarray, truth: np.ndarray, *, threshold: float = 0.5) -> pd.DataFrame:
    """One row per true cell: ``true_label``, ``status`` (matched, merged, missed), ``iou``
    (with its best predicted cell, 0 when none overlaps), ``pred_label`` (that cell, 0 when
    none) and ``merged_with`` (the other true cells that cell covers more than half of,
    ``;``-separated, empty when none).

    Examples
    --------
    >>> truth = np.array([[1, 1, 0, 2, 2, 0, 3, 3, 0, 4]])
    >>> pred = np.array([[5, 5, 0, 6, 6, 6, 6, 6, 0, 0]])
    >>> t = match_cells(pred, truth)
    >>> t[["true_label", "status", "pred_label", "merged_with"]].values.tolist()
    [[1, 'matched', 5, ''], [2, 'merged', 6, '3'], [3, 'merged', 6, '2'], [4, 'missed', 0, '']]
    >>> t["iou"].round(2).tolist()
    [1.0, 0.4, 0.4, 0.0]
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"pred, truth: expected label images of the same shape, got "
                         f"{pred.shape} and {truth.shape}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold: expected an IoU in (0, 1], got {threshold!r}")
    t, p, inter, t_ids, size_t, size_p = _overlaps(pred, truth)
    iou = inter / (np.array([size_t[i] for i in t.tolist()], float)
                   + np.array([size_p[i] for i in p.tolist()], float) - inter)
    matched = _one_to_one(t, p, iou, threshold)
    covered = inter / np.array([size_t[i] for i in t.tolist()], float) >= 0.5
    covers: dict[int, list[int]] = {}  # predicted cell -> true cells it covers half of
    for ti, pi in zip(t[covered].tolist(), p[covered].tolist(), strict=True):
        covers.setdefault(pi, []).append(ti)
    rows = []
    for tid in t_ids.tolist():
        mine = np.flatnonzero(t == tid)
        best = mine[np.argmax(iou[mine])] if len(mine) else None
        if tid in matched:
            best = matched[tid]
        best_iou = float(iou[best]) if best is not None else 0.0
        best_p = int(p[best]) if best is not None else 0
        holder = next((int(p[j]) for j in mine if covered[j]), None)
        others = [o for o in covers.get(holder, []) if o != tid]
        status = "matched" if tid in matched else "merged" if others else "missed"
        if status == "merged":
            best_p = holder
        rows.append({"true_label": int(tid), "status": status, "iou": best_iou,
                     "pred_label": best_p, "merged_with": ";".join(map(str, others))})
    return pd.DataFrame(rows, columns=["true_label", "status", "iou", "pred_label",
                                       "merged_with"])
