"""Training targets from instance or binary labels: separation borders and an ignore mask.

The U-Net paper trains a two-class network (background, cell) and separates touching cells by
background borders in the target, so the network never learns to merge two cells. Here a pixel of
one instance that has a *different* instance in its full neighbourhood (8 pixels in 2D, 26 in 3D)
becomes background in the two-class target. An optional three-class target keeps the borders as a
class of their own: 0 background, 1 cell interior, 2 cell border (a cell pixel touching background
or another cell). The tissue target (``tissue=True``, for cells that fill the space:
:mod:`napari_unet.core.targets.tissue`) has three classes too: 0 background, 1 cell, 2 wall (a
cell pixel with another cell among its neighbours); every cell pixel stays a cell pixel.

Labels come in two flavours, told apart by their values:

* **binary / semantic** masks (``bool``, or only the values ``{0, v}``, e.g. ISBI 2012's 255 = cell,
  0 = membrane): the cells are the 4-connected (6-connected in 3D) components of the foreground;
* **instance** maps (anything else): every positive id is one cell, 0 is background; ids need
  not be consecutive.

Examples
--------
>>> import numpy as np
>>> labels = np.array([[1, 1, 2, 2],
...                    [1, 1, 2, 2],
...                    [0, 0, 0, 0]])
>>> target, weight_mask = make_target(labels)
>>> target
array([[1, 0, 0, 1],
       [1, 0, 0, 1],
       [0, 0, 0, 0]], dtype=uint8)
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage as ndi

from napari_unet.core.targets.instances import as_annotated, to_instances

__all__ = ["make_target", "separation_borders"]

logger = logging.getLogger(__name__)


def separation_borders(instances: np.ndarray) -> np.ndarray:
    """Pixels of an instance that have a different instance in their full neighbourhood.

    Parameters
    ----------
    instances : integer ndarray, 2D or 3D
        Instance ids, 0 = background (see :func:`to_instances`).

    Returns
    -------
    bool ndarray, same shape
        True where a cell pixel has another cell among its 8 (2D) or 26 (3D) neighbours.

    Examples
    --------
    >>> import numpy as np
    >>> separation_borders(np.array([[1, 2, 0, 3]])).astype(int)
    array([[1, 1, 0, 0]])
    """
    inst = np.asarray(instances)
    positive = inst > 0
    border = np.zeros(inst.shape, dtype=bool)
    # The relation is symmetric, so half of the neighbourhood's offsets suffice: compare every
    # pixel with its neighbour at +offset and mark both ends of each differing pair.
    for offset in np.ndindex(*(3,) * inst.ndim):
        offset = tuple(o - 1 for o in offset)
        if offset <= (0,) * inst.ndim:
            continue
        here = tuple(slice(max(-o, 0), n - max(o, 0)) for o, n in zip(offset, inst.shape, strict=True))
        there = tuple(slice(max(o, 0), n - max(-o, 0)) for o, n in zip(offset, inst.shape, strict=True))
        differ = inst[here] != inst[there]
        differ &= positive[here]
        differ &= positive[there]
        border[here] |= differ
        border[there] |= differ
    return border


def make_target(
    labels: np.ndarray,
    *,
    annotated: np.ndarray | None = None,
    num_classes: int = 2,
    tissue: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Training target with separation borders, and the mask of pixels that count in the loss.

    Parameters
    ----------
    labels : ndarray, 2D or 3D
        Instance ids or a binary mask, see :func:`to_instances`.
    annotated : bool ndarray, optional
        True where the annotation is complete. Pixels outside get weight 0, so a user may annotate
        a few cells in one corner of a large image and train on that alone. Default: everywhere.
    num_classes : {2, 3}
        2: 0 background (including separation borders), 1 cell — the paper's target.
        3: 0 background, 1 cell interior, 2 cell border (a cell pixel with background or another
        cell among its 8 / 26 neighbours; image edges do not count as background, nor do pixels
        outside ``annotated``, which are unknown).
    tissue : bool
        The tissue target (3 classes): 0 background, 1 cell, 2 wall — the cell pixels with
        another cell among their 8 / 26 neighbours (:func:`separation_borders`); a cell pixel
        next to background or an unannotated pixel is a cell pixel, so annotated planes of a
        volume keep their cells whole.

    Returns
    -------
    target : uint8 ndarray, same shape as ``labels``
    weight_mask : float32 ndarray, same shape
        1.0 inside ``annotated``, 0.0 outside (all ones without ``annotated``). Multiply it into
        a per-pixel loss, or use it as the ``annotated`` of the weight map.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((3, 6), dtype=np.uint16)
    >>> labels[:, :3], labels[:, 3:5] = 4, 9          # two touching cells, ids 4 and 9
    >>> target, mask = make_target(labels)
    >>> target
    array([[1, 1, 0, 0, 1, 0],
           [1, 1, 0, 0, 1, 0],
           [1, 1, 0, 0, 1, 0]], dtype=uint8)
    >>> make_target(labels, num_classes=3)[0]
    array([[1, 1, 2, 2, 2, 0],
           [1, 1, 2, 2, 2, 0],
           [1, 1, 2, 2, 2, 0]], dtype=uint8)
    >>> make_target(labels, num_classes=3, tissue=True)[0]
    array([[1, 1, 2, 2, 1, 0],
           [1, 1, 2, 2, 1, 0],
           [1, 1, 2, 2, 1, 0]], dtype=uint8)
    >>> mask.dtype, float(mask.min())
    (dtype('float32'), 1.0)
    """
    if num_classes not in (2, 3) or isinstance(num_classes, bool):
        raise ValueError(
            f"num_classes: expected 2 (background, cell) or 3 (background, interior, border), "
            f"got {num_classes!r}"
        )
    if tissue and num_classes != 3:
        raise ValueError(
            f"num_classes: the tissue target has 3 classes (background, cell, wall), got "
            f"{num_classes!r}; pass num_classes=3"
        )
    inst = to_instances(labels)
    ann = as_annotated(annotated, inst.shape)
    cell = inst > 0
    borders = separation_borders(inst)
    if tissue:
        target = cell.astype(np.uint8)
        target[borders] = 2
    elif num_classes == 2:
        target = (cell & ~borders).astype(np.uint8)
    else:
        # only known background makes a border: on an annotated plane of a volume the planes
        # above and below are unknown (0 in the labels, outside ``annotated``), and counting
        # them made every cell voxel of the plane a border voxel, with no interior left
        known_bg = ~cell if ann is None else ~cell & ann
        full = np.ones((3,) * inst.ndim, bool)
        touches_bg = cell & ndi.binary_dilation(known_bg, structure=full)
        target = cell.astype(np.uint8)
        target[borders | touches_bg] = 2
    weight_mask = (
        np.ones(inst.shape, dtype=np.float32) if ann is None else ann.astype(np.float32)
    )
    return target, weight_mask
