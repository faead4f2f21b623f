"""One-click edits of an annotation from a prediction: accept, reject, merge, split a cell.

Each function takes the annotation (cells, 0 elsewhere) and the explicit background (non-zero
where the user said "no cell here"; None when there is none yet) and returns new arrays: the
prediction is only read. By the sparse rule (:mod:`napari_unet.core.targets.sparse`) what they
write is exactly what counts in training: an accepted, merged or split cell is a painted cell
(with its band), a rejected cell's pixels are explicit background; the other predicted cells
count for nothing.

A click names a cell by :func:`cell_mask`: the annotated cell under it if there is one (the
user's own work comes first), else the predicted cell under it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["accept", "cell_mask", "merge", "reject", "split"]


def _new_id(annotation: np.ndarray, k: int = 1) -> int:
    new = int(annotation.max(initial=0)) + 1
    if np.issubdtype(annotation.dtype, np.integer) and new + k - 1 > np.iinfo(annotation.dtype).max:
        raise ValueError(f"annotation: no free cell id in {annotation.dtype} (highest "
                         f"{int(annotation.max())}); convert the layer to int32")
    return new


def _background(background: np.ndarray | None, shape) -> np.ndarray:
    return np.zeros(shape, np.uint8) if background is None else np.array(background, copy=True)


def cell_mask(annotation: np.ndarray, prediction: np.ndarray,
              index: Sequence[int]) -> tuple[np.ndarray, str]:
    """The cell under pixel ``index``: (its mask, ``"annotation"`` or ``"prediction"``); a
    ValueError when neither has a cell there.

    >>> ann = np.array([[0, 0, 3]]); pred = np.array([[5, 5, 5]])
    >>> [(m.astype(int).tolist(), s) for m, s in (cell_mask(ann, pred, (0, 0)),
    ...                                           cell_mask(ann, pred, (0, 2)))]
    [([[1, 1, 1]], 'prediction'), ([[0, 0, 1]], 'annotation')]
    """
    index = tuple(round(float(i)) for i in index)
    if len(index) != prediction.ndim or any(not 0 <= i < n for i, n in
                                             zip(index, prediction.shape, strict=True)):
        raise ValueError(f"index: {index} is outside the image of shape {prediction.shape}; "
                         "click on a cell")
    if annotation[index]:
        return annotation == annotation[index], "annotation"
    if prediction[index]:
        return prediction == prediction[index], "prediction"
    raise ValueError(f"index: no cell at {index} in the prediction or the annotation; click "
                     "inside a cell")


def accept(annotation: np.ndarray, background: np.ndarray | None,
           mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    """The predicted cell ``mask`` becomes an annotated cell (a new id) where the annotation
    is still empty; its pixels are no longer background. Returns (annotation, background,
    [its id]).

    >>> ann = np.array([[0, 0, 2, 0]]); pred_cell = np.array([[0, 1, 1, 1]], bool)
    >>> accept(ann, None, pred_cell)[0].tolist()
    [[0, 3, 2, 3]]
    """
    free = mask & (annotation == 0)
    if not free.any():
        raise ValueError("accept: the cell is annotated already; reject it first to replace it")
    new = _new_id(annotation)
    out = np.array(annotation, copy=True)
    out[free] = new
    if background is not None:
        background = np.where(free, 0, background).astype(background.dtype)
    return out, background, [new]


def reject(annotation: np.ndarray, background: np.ndarray | None,
           mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The cell ``mask`` is no cell: its pixels become explicit background (and leave the
    annotation). Returns (annotation, background, []).

    >>> ann = np.array([[0, 4, 4, 0]]); cell = np.array([[0, 1, 1, 1]], bool)
    >>> a, b, _ = reject(ann, None, cell)
    >>> a.tolist(), b.tolist()
    ([[0, 0, 0, 0]], [[0, 1, 1, 1]])
    """
    out = np.where(mask, 0, annotation).astype(annotation.dtype)
    background = _background(background, annotation.shape)
    background[mask] = 1
    return out, background, []


def merge(annotation: np.ndarray, background: np.ndarray | None, first: np.ndarray,
          second: np.ndarray, *, gap: int = 2) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    """Two cells become one annotated cell: their union and the gap of up to ``gap`` pixels
    between them (a closing of the union, never over another annotated cell). Returns
    (annotation, background, [its id]).

    >>> ann = np.zeros((1, 7), int)
    >>> a = np.array([[1, 1, 1, 0, 0, 0, 0]], bool); b = np.array([[0, 0, 0, 0, 1, 1, 0]], bool)
    >>> merge(ann, None, a, b)[0].tolist()
    [[1, 1, 1, 1, 1, 1, 0]]
    """
    if np.array_equal(first, second):
        raise ValueError("merge: both clicks are on the same cell; click two different cells")
    union = first | second
    structure = ndi.generate_binary_structure(union.ndim, union.ndim)
    closed = ndi.binary_closing(np.pad(union, gap), structure, iterations=gap)
    closed = closed[tuple(slice(gap, -gap) for _ in range(union.ndim))] | union
    out = np.where(union, 0, annotation).astype(annotation.dtype)  # the two cells' old ids
    cell = closed & (out == 0)
    new = _new_id(out)
    out[cell] = new
    if background is not None:
        background = np.where(cell, 0, background).astype(background.dtype)
    return out, background, [new]


def split(annotation: np.ndarray, background: np.ndarray | None, mask: np.ndarray,
          seeds: Sequence[Sequence[float]], prob: np.ndarray | None = None,
          ) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    """One cell becomes as many annotated cells as ``seeds`` (pixel indices inside it): a
    watershed from the seeds over the foreground probability ``prob`` (the valley between
    two nuclei) or, without it, over the distance to the cell's edge; a line of background
    separates the parts. Returns (annotation, background, their ids).

    >>> ann = np.zeros((1, 9), int); cell = np.array([[0, 1, 1, 1, 1, 1, 1, 1, 0]], bool)
    >>> prob = np.array([[0, .9, .9, .9, .6, .9, .9, .9, 0]])
    >>> split(ann, None, cell, [(0, 2), (0, 6)], prob)[0].tolist()
    [[0, 1, 1, 1, 0, 2, 2, 2, 0]]
    """
    from skimage.segmentation import watershed

    seeds = [tuple(round(float(s)) for s in seed) for seed in seeds]
    if len(seeds) < 2 or len(set(seeds)) < len(seeds):
        raise ValueError(f"seeds: expected two or more different points inside the cell, got "
                         f"{seeds}; click once in each part")
    markers = np.zeros(mask.shape, np.int32)
    for k, seed in enumerate(seeds, start=1):
        if not mask[seed]:
            raise ValueError(f"seeds: {seed} is outside the cell being split; click inside it")
        markers[seed] = k
    height = -np.asarray(prob, np.float32) if prob is not None else -ndi.distance_transform_edt(mask)
    parts = watershed(height, markers, mask=mask, watershed_line=True)
    out = np.where(mask, 0, annotation).astype(annotation.dtype)
    new = _new_id(out, len(seeds))
    ids = []
    for k in range(1, len(seeds) + 1):
        out[parts == k] = new + k - 1
        ids.append(new + k - 1)
    if background is not None:
        background = np.where(parts > 0, 0, background).astype(background.dtype)
    return out, background, ids
