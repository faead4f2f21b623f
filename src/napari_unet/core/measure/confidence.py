"""The model's confidence in each predicted cell: one number in [0, 1] per row of the table.

Read from what a prediction computes anyway (the foreground probability, the spread of the
test-time flips where they ran) and from the table's shape columns; each term is in [0, 1],
1 where the cell looks right:

==============  ==========================================================================
``probability``  the cell's mean foreground probability (``mean_probability``)
``contrast``     where a table has ``border_contrast`` (:func:`border_contrast`): that mean
                 minus the mean probability in a ring of :data:`RING` px just outside the
                 cell; a cell cut out of a larger blob has little contrast
``agreement``    1 − 2 × the mean spread of the flips inside (``mean_flip_std``; 1 without
                 test-time augmentation): the flips disagree on doubtful cells
``shape``        the solidity (2D; 1 in 3D): two merged cells are not convex
``size``         min(a / m, m / a) of the cell's size a and the median size m of the
                 image's cells: fragments and merges stand out (1 for a cell smaller than
                 m that touches the image's edge: it is cut, not wrong)
==============  ==========================================================================

``confidence`` is the geometric mean of the terms of :data:`CONFIDENCE_TERMS`: the
probability, the flips' agreement and the shape. They were chosen by how well they rank the
wrong cells (not matched to a true cell at IoU 0.5) first on 16 DSB 2018 validation images
(``benchmarks/bench_confidence.py``; BENCHMARKS.md, "Which cells to check"): AUC 0.942 without
test-time augmentation (the best of every combination of the five terms), 0.930 with it (the
best, agreement and shape, 0.933); the size lowered it (0.880 with it), the border contrast
did not raise it (0.933) and costs a distance transform. Read from the table's columns, the
confidence costs nothing beside the table itself.

The geometric mean s is then put on the scale the review list shares with the likely misses
(:mod:`napari_unet.core.review.suggest`): ``confidence`` = 1 − the estimated chance that the
cell needs a fix, a logistic map of log(s / (1 − s)) (:func:`calibrate`, :data:`CELL_SCALE`,
:data:`CELL_SCALE_TTA`) fitted on DSB 2018 validation images. The map is monotone, so the
cells' own ranking (and its AUC) is that of s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

__all__ = [
    "CELL_SCALE",
    "CELL_SCALE_TTA",
    "CONFIDENCE",
    "CONFIDENCE_TERMS",
    "PROBABILITY",
    "RING",
    "TERMS",
    "add_confidence",
    "border_contrast",
    "calibrate",
    "combine",
    "confidence_terms",
]

#: the column of the combined confidence
CONFIDENCE = "confidence"
#: the per-pixel map (and column) of the foreground probability
PROBABILITY = "mean_probability"
#: width in pixels of the ring outside a cell read by ``border_contrast``
RING = 2
#: every term :func:`confidence_terms` computes
TERMS = ("probability", "contrast", "agreement", "shape", "size")
#: the terms combined into ``confidence`` (chosen on DSB 2018 validation images)
CONFIDENCE_TERMS = ("probability", "agreement", "shape")
_FLOOR = 1e-3  # a term of 0 would hide every other term in the geometric mean
#: (a, b) of the chance that a predicted cell needs a fix (it is not matched one-to-one to a
#: true cell at IoU 0.5), P = 1 / (1 + exp(−(a + b · log(s / (1 − s))))) of the geometric
#: mean s of its terms, one pass: fitted by maximum likelihood on the 80 DSB 2018 validation
#: images (the shipped ``nuclei`` model; 3,060 cells, 372 wrong; ``bench_confidence.py
#: --fit``); binned, the predicted chances 0.017 / 0.104 / 0.328 / 0.693 against 0.016 /
#: 0.108 / 0.332 / 0.683 observed. The logit form fits better held out than a linear one
#: (log loss 0.231 against 0.238: the scores crowd near 1).
CELL_SCALE = (6.861, -3.143)
#: the same with test-time augmentation (the table has ``mean_flip_std``): the agreement term
#: lowers s, so the same chance sits at a lower s (3,058 cells, 368 wrong; 0.016 / 0.102 /
#: 0.320 / 0.711 predicted, 0.015 / 0.108 / 0.309 / 0.717 observed)
CELL_SCALE_TTA = (6.118, -3.136)


def border_contrast(labels: np.ndarray, prob: np.ndarray, ids: Sequence[int], *,
                    ring: int = RING) -> np.ndarray:
    """Per cell of ``ids``: its mean ``prob`` minus the mean ``prob`` on the background
    pixels within ``ring`` pixels of it (its own mean when it has no background around).

    Examples
    --------
    >>> labels = np.zeros((1, 9), int); labels[0, 3:6] = 1
    >>> prob = np.array([[0, 0, 0.2, 1, 1, 1, 0.8, 0, 0]], np.float32)
    >>> border_contrast(labels, prob, [1]).round(2).tolist()
    [0.75]
    """
    from skimage.segmentation import expand_labels

    ids = np.asarray(ids, np.int64)
    if ids.size == 0:
        return np.zeros(0, np.float32)
    around = np.where(labels == 0, expand_labels(labels, ring), 0)
    inside = np.asarray(ndi.mean(prob, labels, ids), np.float64)
    outside = np.asarray(ndi.mean(prob, around, ids), np.float64)
    return np.where(np.isfinite(outside), inside - outside, inside).astype(np.float32)


def confidence_terms(table: pd.DataFrame) -> pd.DataFrame:
    """The terms of the module's docstring, one column each, from a table with
    ``mean_probability`` (and ``mean_flip_std``, ``solidity``, ``border_contrast`` where they
    exist; a missing one is 1).

    Examples
    --------
    >>> t = pd.DataFrame({"area": [100, 100, 200], "mean_probability": [0.9, 0.9, 0.8],
    ...                   "solidity": [1.0, 0.9, 0.7]})
    >>> confidence_terms(t)["size"].tolist()
    [1.0, 1.0, 0.5]
    """
    n = len(table)
    size_column = "area" if "area" in table.columns else "volume"
    size = table[size_column].to_numpy(np.float64)
    median = float(np.median(size)) if n else 1.0
    ratio = np.minimum(size / median, median / np.maximum(size, 1e-12)) if median > 0 else 1.0
    if "touches_border" in table and median > 0:  # cut by the image's edge, not a fragment
        ratio = np.where(table["touches_border"].to_numpy(bool) & (size < median), 1.0, ratio)
    spread = table["mean_flip_std"].to_numpy(np.float64) if "mean_flip_std" in table else 0.0
    terms = {
        "probability": table[PROBABILITY].to_numpy(np.float64),
        "contrast": (table["border_contrast"].to_numpy(np.float64) if "border_contrast" in table
                     else np.ones(n)),
        "agreement": 1.0 - 2.0 * np.broadcast_to(spread, (n,)),
        "shape": table["solidity"].to_numpy(np.float64) if "solidity" in table else np.ones(n),
        "size": np.broadcast_to(ratio, (n,)),
    }
    return pd.DataFrame({k: np.clip(v, 0.0, 1.0) for k, v in terms.items()}, index=table.index)


def combine(terms: pd.DataFrame, names: Sequence[str] = CONFIDENCE_TERMS) -> np.ndarray:
    """The geometric mean of the ``names`` columns of ``terms`` (float32; each floored at
    0.001 so that one term of 0 does not hide the others).

    >>> combine(pd.DataFrame({"a": [1.0, 0.25], "b": [1.0, 1.0]}), ["a", "b"]).tolist()
    [1.0, 0.5]
    """
    if not names:
        raise ValueError(f"names: expected at least one of {TERMS}, got none")
    values = np.log(np.clip(terms[list(names)].to_numpy(np.float64), _FLOOR, 1.0))
    return np.exp(values.mean(axis=1)).astype(np.float32)


def calibrate(raw: np.ndarray, scale: tuple[float, float] = CELL_SCALE) -> np.ndarray:
    """1 − the estimated chance that an item needs a fix, from its score ``raw`` in [0, 1]
    on its own kind's scale and that kind's fitted ``scale`` (a, b):
    1 − 1 / (1 + exp(−(a + b · log(raw / (1 − raw))))), ``raw`` clipped to [0.001, 0.999]
    (float32). A monotone map for b < 0: it keeps a kind's ranking and puts every kind on
    one scale, so that predicted cells and likely misses rank together.

    >>> [round(float(c), 2) for c in calibrate(np.array([0.8, 0.9, 0.95]), CELL_SCALE)]
    [0.08, 0.51, 0.92]
    """
    a, b = scale
    x = np.clip(np.asarray(raw, np.float64), _FLOOR, 1.0 - _FLOOR)
    return (1.0 / (1.0 + np.exp(a + b * np.log(x / (1.0 - x))))).astype(np.float32)


def add_confidence(table: pd.DataFrame) -> pd.DataFrame:
    """Add the ``confidence`` column to a cells' table measured with the ``mean_probability``
    map (:func:`napari_unet.core.measure.measure_cells` does), in place; returns it.

    Examples
    --------
    >>> from napari_unet.core.measure import measure_cells
    >>> labels = np.zeros((12, 12), int); labels[2:6, 2:6] = 1; labels[7:11, 5:11] = 2
    >>> labels[9:11, 5:8] = 0                       # cell 2 is not convex
    >>> prob = np.where(labels > 0, 0.95, 0.05).astype(np.float32)
    >>> t = measure_cells(labels, maps={"mean_probability": prob})
    >>> [round(float(c), 2) for c in t["confidence"]]
    [1.0, 0.91]
    """
    scale = CELL_SCALE_TTA if "mean_flip_std" in table else CELL_SCALE
    table[CONFIDENCE] = calibrate(combine(confidence_terms(table)), scale)
    return table
