"""Which cells to check next: the least certain predicted cells and the likely misses, ranked.

A predicted cell's doubt is its ``confidence`` (the cells' table column,
:mod:`napari_unet.core.measure.confidence`). A cell the model missed has no row in that table:
:func:`likely_misses` finds it as a blob of foreground probability that no cell covers (the
post-processing's threshold, seeds or minimum size dropped it), scored by
1 − (mean probability × its size relative to the median cell's). Both kinds are put on one
scale, 1 − the estimated chance that the item needs a fix (a cell: it is not matched to a true
cell; a miss: it is a real missed nucleus, not a false alarm), by a logistic map per kind
(:func:`~napari_unet.core.measure.confidence.calibrate`, :data:`MISS_SCALE`) fitted on DSB
2018 validation images; :func:`review_table` ranks both together, least certain first, with
the reason in words. On the 80 validation images (the shipped ``nuclei`` model, one pass)
this raises the AUC of the merged list against "needs a fix" from 0.888 to 0.897 (cells alone
0.902 either way) and takes the likely misses in the first 8 per image from 80 to 17 (of
which 32 % are real): a miss no longer outranks a cell that is more likely wrong.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from napari_unet.core.measure.confidence import (
    CONFIDENCE,
    CONFIDENCE_TERMS,
    RING,
    calibrate,
    confidence_terms,
)

__all__ = ["MISS_SCALE", "MISS_THRESHOLD", "REASONS", "bbox_columns", "likely_misses",
           "review_table", "suggestions"]

#: a likely miss is a blob of foreground probability at least this high that no cell covers
MISS_THRESHOLD = 0.5
#: (a, b) of the chance that a likely miss needs a fix (its blob covers a true cell that no
#: predicted cell matched; otherwise it is a false alarm), from its score
#: s = 1 − mean probability × min(1, area / median area), as ``calibrate`` maps it: fitted on
#: the 80 DSB 2018 validation images, one pass and test-time augmentation together (the shipped
#: ``nuclei`` model; 212 likely misses, 72 real, 34 %). s ranks them little better than chance
#: (AUC 0.58 one pass, 0.52 with the flips), so the map is nearly flat: a chance of 0.28
#: (bright, full size) to 0.45 (faint, small) that a miss is real; a cell more doubtful than
#: that comes first.
MISS_SCALE = (-0.497, -0.212)
#: the words for the term that lowers a cell's confidence most
REASONS = {"probability": "low probability", "contrast": "blurred or cut border",
           "agreement": "the flips disagree", "shape": "not convex (merged cells?)",
           "size": "unusual size", "miss": "probability without a cell"}


def bbox_columns(ndim: int) -> list[str]:
    """The bounding box's column names of the cells' table: starts, then stops.

    >>> bbox_columns(2)
    ['bbox_y0', 'bbox_x0', 'bbox_y1', 'bbox_x1']
    """
    axes = "zyx"[-ndim:]
    return [f"bbox_{a}0" for a in axes] + [f"bbox_{a}1" for a in axes]


def likely_misses(labels: np.ndarray, prob: np.ndarray, *, threshold: float = MISS_THRESHOLD,
                  min_size: float | None = None) -> pd.DataFrame:
    """Blobs of ``prob`` ≥ ``threshold`` that no cell of ``labels`` covers, away from the
    cells (the fringe of :data:`~napari_unet.core.measure.confidence.RING` px around every
    cell is the cell's border, not a miss) and at least ``min_size`` pixels (default a quarter
    of the median cell's, at least 10).

    Returns one row per blob: ``label`` 0, ``area`` (pixels), the bounding box as in the
    cells' table (:func:`bbox_columns`), ``mean_probability``, ``confidence`` (1 − the
    estimated chance that the blob is a real missed cell: :data:`MISS_SCALE`).

    Examples
    --------
    >>> labels = np.zeros((20, 20), int); labels[2:8, 2:8] = 1
    >>> prob = np.where(labels > 0, 0.95, 0.05).astype(np.float32)
    >>> prob[12:18, 12:18] = 0.6                  # a nucleus the threshold dropped
    >>> m = likely_misses(labels, prob)
    >>> m[["area", "bbox_y0", "bbox_x1"]].values.tolist(), round(float(m.loc[0, "confidence"]), 2)
    ([[36, 12, 18]], 0.6)
    """
    from skimage.measure import regionprops_table

    labels, prob = np.asarray(labels), np.asarray(prob, np.float32)
    if labels.shape != prob.shape:
        raise ValueError(f"prob: expected the labels' shape {labels.shape}, got {prob.shape}")
    _, sizes = np.unique(labels[labels > 0], return_counts=True)
    median = float(np.median(sizes)) if sizes.size else 0.0
    if min_size is None:
        min_size = max(10.0, median / 4)
    near = ndi.maximum_filter(labels > 0, size=2 * RING + 1)  # a cell's fringe, no miss
    blobs, _ = ndi.label((prob >= threshold) & ~near)
    raw = regionprops_table(blobs, prob, properties=["area", "bbox", "intensity_mean"])
    ndim = labels.ndim
    table = pd.DataFrame({"label": 0, "area": raw["area"].astype(np.int64)},
                         index=range(len(raw["area"])))
    for i, name in enumerate(bbox_columns(ndim)):
        table[name] = raw[f"bbox-{i}"].astype(np.int64)
    table["mean_probability"] = raw["intensity_mean"].astype(np.float32)
    table = table[table["area"] >= min_size].reset_index(drop=True)
    relative = np.minimum(1.0, table["area"] / median) if median > 0 else 1.0
    score = 1.0 - table["mean_probability"].to_numpy(np.float64) * relative
    table[CONFIDENCE] = calibrate(score, MISS_SCALE)
    return table


def _cell_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The cells of a measured table as review rows (with the reason)."""
    if CONFIDENCE not in table:
        raise ValueError("table: expected the cells' table of a prediction (with its "
                         "'confidence' column, measured with the probabilities); got columns "
                         f"{list(table.columns)}")
    terms = confidence_terms(table)[list(CONFIDENCE_TERMS)]
    bbox = bbox_columns(3 if "bbox_z0" in table else 2)
    rows = pd.DataFrame({"kind": "cell", "label": table["label"].to_numpy(np.int64),
                         "plane": table["plane"].to_numpy() if "plane" in table else -1},
                        index=range(len(table)))
    for name in bbox:
        rows[name] = table[name].to_numpy(np.int64)
    rows[CONFIDENCE] = table[CONFIDENCE].to_numpy(np.float32)
    rows["reason"] = [REASONS[t] for t in terms.idxmin(axis=1)] if len(terms) else []
    return rows


def suggestions(cells: pd.DataFrame, misses: pd.DataFrame | None = None, *,
                n: int | None = None) -> pd.DataFrame:
    """The cells of a measured table and the likely misses, least certain first (``n`` of them;
    all without ``n``): columns ``rank`` (1 = check first), ``kind`` (``cell`` / ``miss``),
    ``label`` (the cell's id; 0 for a miss), ``plane`` (−1 unless a stack), the bounding box
    (pixel indices, :func:`bbox_columns`), ``confidence``, ``reason``."""
    rows = _cell_rows(cells)
    if misses is not None and len(misses):
        extra = misses[[c for c in rows.columns if c in misses.columns]].assign(
            kind="miss", reason=REASONS["miss"])
        if "plane" not in extra:
            extra["plane"] = -1
        rows = pd.concat([rows, extra[rows.columns]], ignore_index=True)
    rows = rows.sort_values(CONFIDENCE, kind="stable").reset_index(drop=True)
    rows.insert(0, "rank", np.arange(1, len(rows) + 1))
    return rows.head(n) if n is not None else rows


def review_table(table: pd.DataFrame, labels: np.ndarray, prob: np.ndarray, *,
                 planes: bool = False, n: int | None = None) -> pd.DataFrame:
    """:func:`suggestions` of a prediction: its cells' table (with ``confidence``), its labels
    and its foreground probability (the ``mean_probability`` map); ``planes``: a stack
    predicted plane by plane (misses searched per plane).

    Examples
    --------
    >>> from napari_unet.core.measure import measure_cells
    >>> labels = np.zeros((24, 24), int); labels[2:8, 2:8] = 1; labels[2:8, 12:18] = 2
    >>> labels[12:18, 2:14] = 3                    # two cells merged into one
    >>> prob = np.where(labels > 0, 0.95, 0.05).astype(np.float32)
    >>> prob[12:18, 7:9] = 0.7; labels[12:14, 7:9] = 0; labels[16:18, 7:9] = 0
    >>> t = measure_cells(labels, maps={"mean_probability": prob})
    >>> r = review_table(t, labels, prob)
    >>> r.loc[0, "kind"], int(r.loc[0, "label"]), r.loc[0, "reason"]
    ('cell', 3, 'not convex (merged cells?)')
    """
    if planes:
        misses = []
        for z in range(labels.shape[0]):
            m = likely_misses(labels[z], prob[z])
            misses.append(m.assign(plane=z))
        missed = pd.concat(misses, ignore_index=True) if misses else None
    else:
        missed = likely_misses(labels, prob)
    return suggestions(table, missed, n=n)
