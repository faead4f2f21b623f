"""Cells that fill the space: every tissue pixel given to a cell by a seeded watershed.

A model trained on the tissue target (background, cell, wall:
:mod:`napari_unet.core.targets.tissue`) says where the tissue is (not background) and where the
walls between its cells are. :func:`tissue_labels` starts every cell from a confident interior —
a face-connected component of the cell probability above the seed level, at least ``min_size``
pixels — and floods the tissue from these seeds along the probability of not being a cell
interior (inside the tissue: the wall probability), so the walls are where neighbouring cells
meet and every tissue pixel belongs to a cell. Background is only where the model sees no
tissue. A piece of tissue without a seed becomes a cell of its own.

A two-class model (background, cell) cannot tell a wall from the outside: for it the whole
image is tissue, its cells fill the image (``predict --tissue`` on a model trained the paper's
way on a tissue). This is ``PostprocessSettings(tissue=True)``
(:mod:`napari_unet.core.predict.postprocess`), images ``(K, H, W)`` and volumes
``(K, Z, Y, X)`` alike.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["tissue_labels", "tissue_mask"]


def tissue_mask(prob: np.ndarray, *, threshold: float = 0.5, argmax: bool = False
                ) -> np.ndarray:
    """Where the tissue is: not background above ``threshold`` (or the most probable class,
    with ``argmax``) for 3 classes; everywhere for 2 (background and wall are one class).

    Examples
    --------
    >>> p = np.zeros((3, 1, 4), np.float32); p[0] = [[0.9, 0.6, 0.4, 0.1]]; p[1] = 1 - p[0]
    >>> tissue_mask(p).astype(int).tolist()
    [[0, 0, 1, 1]]
    """
    if prob.shape[0] == 2:
        return np.ones(prob.shape[1:], bool)
    if argmax:
        return np.argmax(prob, axis=0) != 0
    return prob[0] < 1.0 - threshold


def tissue_labels(prob: np.ndarray, *, threshold: float = 0.5, seeds: float = 0.0,
                  min_size: int = 10, argmax: bool = False) -> np.ndarray:
    """Instance labels (int32, 0 = background) in which every tissue pixel has a cell (the
    ids need not be consecutive; ``labels_from_probabilities`` numbers them 1..N).

    Parameters
    ----------
    prob : ndarray (num_classes, H, W) or (num_classes, Z, Y, X)
        Softmax probabilities: 3 classes (background, cell, wall) or 2 (background, cell).
    threshold : float
        The tissue is where the background probability is below ``1 - threshold``
        (:func:`tissue_mask`); cell seeds are above ``max(seeds, threshold)``.
    seeds : float
        The confident-interior level of the seeds (below ``threshold``: the threshold).
    min_size : int
        A seed has at least this many pixels (smaller ones are flooded by their neighbours).
    argmax : bool
        The tissue is where the most probable class is not background.

    Examples
    --------
    Three cells in a row, one-pixel walls at columns 3 and 7 (each goes to a cell beside it),
    background at the right end:

    >>> cell = np.array([[.9, .9, .8, .1, .8, .9, .8, .2, .9, .9, 0, 0]] * 3, np.float32)
    >>> wall = np.where(cell < 0.5, 0.8, 1 - cell); wall[:, 10:] = 0
    >>> prob = np.stack([1 - cell - wall, cell, wall])
    >>> tissue_labels(prob, min_size=1)[0].tolist()
    [1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 0, 0]
    """
    from skimage.segmentation import watershed

    prob = np.asarray(prob)
    tissue = tissue_mask(prob, threshold=threshold, argmax=argmax)
    interior = prob[1]
    face = ndi.generate_binary_structure(interior.ndim, 1)
    markers, _ = ndi.label((interior > max(float(seeds), float(threshold))) & tissue,
                           structure=face)
    small = np.bincount(markers.ravel()) < max(1, int(min_size))
    small[0] = False
    markers[small[markers]] = 0  # too small to start a cell
    labels = watershed(1.0 - interior, markers, mask=tissue, connectivity=1).astype(np.int32)
    rest, n = ndi.label(tissue & (labels == 0), structure=face)
    if n:  # tissue without a confident interior: a cell of its own
        labels[rest > 0] = rest[rest > 0] + int(labels.max())
    return labels
