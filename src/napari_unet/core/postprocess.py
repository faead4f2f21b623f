"""Instance labels from class probabilities: touching cells kept apart, small objects dropped.

Two-class models (background, cell) were trained with the paper's separation borders between
touching cells, so a threshold on the cell probability leaves a thin background line between them
and 4-connected components are the cells. Where a border was missed, ``watershed=True`` splits a
component along the valleys of its distance transform, seeded from its local maxima. Three-class
models (background, interior, border) use the interior components as seeds that a watershed grows
into interior ∪ border.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["fill_label_holes", "labels_from_probabilities", "remove_small_labels"]

_CROSS = ndi.generate_binary_structure(2, 1)


def fill_label_holes(labels: np.ndarray) -> np.ndarray:
    """Fill background holes inside each label (holes holding other labels are left alone).

    Examples
    --------
    >>> lab = np.zeros((5, 5), np.int32); lab[1:4, 1:4] = 1; lab[2, 2] = 0
    >>> int(fill_label_holes(lab)[2, 2])
    1
    """
    out = labels.copy()
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        view = out[sl]
        filled = ndi.binary_fill_holes(view == i)
        view[filled & (view == 0)] = i
    return out


def remove_small_labels(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop labels with fewer than ``min_size`` pixels and renumber the rest 1..N (int32).

    Examples
    --------
    >>> remove_small_labels(np.array([[1, 1, 0, 2]]), 2).tolist()
    [[1, 1, 0, 0]]
    """
    counts = np.bincount(labels.ravel())
    keep = counts >= max(1, int(min_size))
    keep[0] = False
    lut = np.zeros(len(counts), np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels]


def _split_watershed(fg: np.ndarray, cc: np.ndarray, min_distance: int) -> np.ndarray:
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    dist = ndi.distance_transform_edt(fg)
    dist = ndi.gaussian_filter(dist, 1.0)  # no plateaus: one peak per blob
    peaks = peak_local_max(
        dist, min_distance=max(1, int(min_distance)), labels=cc, exclude_border=False
    )
    markers = np.zeros(fg.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    seeded = np.unique(cc[tuple(peaks.T)]) if len(peaks) else np.zeros(0, cc.dtype)
    missing = np.setdiff1d(np.arange(1, int(cc.max()) + 1), seeded)
    if len(missing):  # components without a peak keep one seed each
        pos = ndi.maximum_position(dist, cc, missing)
        for j, p in enumerate(pos):
            markers[p] = len(peaks) + 1 + j
    return watershed(-dist, markers, mask=fg, connectivity=1).astype(np.int32)


def labels_from_probabilities(
    prob: np.ndarray,
    *,
    threshold: float = 0.5,
    argmax: bool = False,
    watershed: bool = False,
    min_distance: int = 5,
    min_size: int = 10,
    fill_holes: bool = True,
) -> np.ndarray:
    """Instance labels (int32, 0 = background) from softmax probabilities.

    Parameters
    ----------
    prob : ndarray (num_classes, H, W)
        2 classes (background, cell) or 3 (background, interior, border).
    threshold : float
        Foreground where the cell (interior) probability exceeds it.
    argmax : bool
        Use the most probable class instead of ``threshold``.
    watershed : bool
        2 classes: split components along distance-transform valleys, seeded from local maxima at
        least ``min_distance`` apart (for cells whose separation border was missed).
    min_distance : int
        Minimum seed distance of the watershed split, about a cell radius.
    min_size : int
        Labels with fewer pixels are removed.
    fill_holes : bool
        Fill background holes inside each label.

    Returns
    -------
    int32 ndarray (H, W), labels renumbered 1..N.

    Examples
    --------
    >>> p1 = np.zeros((9, 9), np.float32); p1[1:4, 1:8] = 1; p1[5:8, 1:8] = 1
    >>> labels = labels_from_probabilities(np.stack([1 - p1, p1]), min_size=1)
    >>> labels.dtype, int(labels.max())
    (dtype('int32'), 2)
    """
    prob = np.asarray(prob)
    if prob.ndim != 3 or prob.shape[0] not in (2, 3):
        raise ValueError(
            f"prob: expected (num_classes, H, W) with 2 or 3 classes, got shape {prob.shape}"
        )
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold: expected a probability in [0, 1], got {threshold!r}")
    cls = np.argmax(prob, axis=0) if argmax else None
    cell = cls == 1 if argmax else prob[1] > threshold
    if prob.shape[0] == 2:
        cc, _ = ndi.label(cell, structure=_CROSS)
        labels = _split_watershed(cell, cc, min_distance) if watershed else cc.astype(np.int32)
    else:
        from skimage.segmentation import watershed as _watershed

        fg = cls != 0 if argmax else prob[0] < 1.0 - threshold
        seeds, _ = ndi.label(cell, structure=_CROSS)
        labels = _watershed(-prob[1], seeds, mask=fg | cell, connectivity=1).astype(np.int32)
    if fill_holes:
        labels = fill_label_holes(labels)
    return remove_small_labels(labels, min_size)
