"""Join a 2D model's per-plane cells into 3D objects (``predict --stitch``): a cell continues
into the next plane where their overlap is large enough."""

from __future__ import annotations

import numpy as np

__all__ = ["stitch_planes"]


def stitch_planes(labels: np.ndarray, *, iou: float = 0.25) -> np.ndarray:
    """Link the per-plane labels of a (Z, Y, X) stack into 3D objects (cellpose's "stitch").

    A 2D model predicts a stack plane by plane, each plane numbered on its own; a nucleus cut by
    ten planes is then ten objects. Going down the stack, every object of a plane takes the id of
    the object of the plane above that it overlaps best, when their intersection over union is at
    least ``iou`` (each object above is taken at most once, best overlap first); otherwise it
    starts a new object.

    Parameters
    ----------
    labels : int ndarray (Z, Y, X)
        Labels per plane (ids may repeat between planes).
    iou : float, keyword only
        The least IoU of two objects on neighbouring planes that makes them one, in (0, 1].

    Returns
    -------
    int32 ndarray (Z, Y, X), ids 1..N over the whole stack.

    Examples
    --------
    >>> stack = np.zeros((3, 4, 6), int)
    >>> stack[:, 1:3, 0:2] = 1       # one cell through all planes
    >>> stack[0, 1:3, 4:6] = 2       # a cell in plane 0 only...
    >>> stack[2, 1:3, 4:6] = 2       # ...and one in plane 2 (not linked: plane 1 is empty there)
    >>> out = stitch_planes(stack)
    >>> [len(np.unique(out[z])) - 1 for z in range(3)], int(out.max())
    ([2, 1, 2], 3)
    >>> bool((out[:, 1, 0] == out[0, 1, 0]).all())
    True
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels: expected a (Z, Y, X) stack of per-plane labels, got shape "
                         f"{labels.shape}")
    if not 0 < iou <= 1:
        raise ValueError(f"iou: expected a number in (0, 1], got {iou!r}")
    out = np.zeros(labels.shape, np.int32)
    next_id = 1
    prev = None
    for z in range(labels.shape[0]):
        cur = labels[z]
        ids, inverse = np.unique(cur, return_inverse=True)
        inverse = inverse.reshape(cur.shape)
        lut = np.zeros(len(ids), np.int32)
        fg = ids != 0
        if prev is not None and fg.any() and prev.any():
            both = (cur != 0) & (prev != 0)
            pairs, inter = np.unique(np.stack([inverse[both], prev[both]]), axis=1,
                                     return_counts=True)
            area_cur = np.bincount(inverse.ravel(), minlength=len(ids))
            pid, parea = np.unique(prev, return_counts=True)
            area_prev = dict(zip(pid.tolist(), parea.tolist(), strict=True))
            scores = inter / (area_cur[pairs[0]] + np.array([area_prev[p] for p in pairs[1]])
                              - inter)
            taken = set()
            for k in np.argsort(-scores, kind="stable"):
                c, p = int(pairs[0, k]), int(pairs[1, k])
                if scores[k] < iou:
                    break
                if lut[c] == 0 and p not in taken:
                    lut[c] = p
                    taken.add(p)
        for c in np.flatnonzero(fg & (lut == 0)):
            lut[c] = next_id
            next_id += 1
        out[z] = lut[inverse]
        prev = out[z]
    return out
