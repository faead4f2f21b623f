"""Class-balance and border weight maps — the paper's loss weights, exact and fast.

The U-Net paper (Ronneberger et al. 2015, eq. 2) weights the pixel-wise cross-entropy with

.. math::

    w(x) = w_c(x) + w_0 \\exp\\left(-\\frac{(d_1(x) + d_2(x))^2}{2\\sigma^2}\\right)

where ``d1``/``d2`` are the Euclidean distances from ``x`` to the nearest and the second-nearest
cell and ``w_c`` balances the class frequencies. The border term makes the thin background gaps
between touching cells expensive to get wrong.

Cells are the instances *after* separation (see :func:`napari_unet.core.targets.make_target`):
the border term is computed on the target's background pixels (including separation borders) and
is 0 on cell pixels. It is exact up to a truncation: beyond ``d1 + d2 = sigma·sqrt(2 ln 1e6)``
(≈ 5.26σ) it is below ``1e-6·w0`` and set to 0. The distances come from a separable sweep that
keeps, per pixel, the nearest two cells with distinct ids (``_two_nearest``), so the cost is
linear in the pixels and independent of the number of cells.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from napari_unet.core.checks import check_spacing
from napari_unet.core.targets.instances import as_annotated, to_instances
from napari_unet.core.targets.target import make_target
from napari_unet.core.weights.two_nearest import border_term

__all__ = ["border_weight_map", "class_weight_vector", "class_weights"]

logger = logging.getLogger(__name__)

#: The border term is truncated where it falls below this fraction of ``w0``.
TRUNCATION = 1e-6


def class_weights(
    target: np.ndarray, *, annotated: np.ndarray | None = None, num_classes: int = 2
) -> np.ndarray:
    """Inverse-class-frequency weights ``w_c``, balanced over the annotated pixels.

    Each class present among the annotated pixels gets ``n / (k · n_c)`` (``n`` annotated pixels,
    ``k`` classes present, ``n_c`` pixels of class ``c``): every class carries the same total
    weight and the mean over the annotated pixels is 1. Outside ``annotated`` the weight is 0.

    Parameters
    ----------
    target : integer ndarray
        Class of every pixel, in ``0 .. num_classes - 1``.
    annotated : bool ndarray, optional
        Where the annotation is complete (default: everywhere).
    num_classes : int
        Number of classes in ``target``.

    Returns
    -------
    float32 ndarray, same shape as ``target`` (all zeros if nothing is annotated).

    Examples
    --------
    >>> import numpy as np
    >>> class_weights(np.array([[0, 0, 0, 1]]))
    array([[0.6666667, 0.6666667, 0.6666667, 2.       ]], dtype=float32)
    """
    target = np.asarray(target)
    ann = as_annotated(annotated, target.shape)
    if target.size and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(
            f"target: expected classes in 0..{num_classes - 1}, got values "
            f"{target.min()}..{target.max()}; pass the matching num_classes"
        )
    per_class = class_weight_vector(target, annotated=ann, num_classes=num_classes)
    out = np.take(per_class, target)
    if ann is not None:
        out *= ann
    return out


def class_weight_vector(
    target: np.ndarray, *, annotated: np.ndarray | None = None, num_classes: int = 2
) -> np.ndarray:
    """The per-class values ``w_c`` of :func:`class_weights` (0 for absent classes), float32.

    Computed once per image, they can weight patches of it (``border_weight_map(...,
    class_weight=...)``), e.g. after augmentation, with the balance of the whole image.

    Examples
    --------
    >>> import numpy as np
    >>> [round(float(v), 3) for v in class_weight_vector(np.array([[0, 0, 0, 1]]), num_classes=3)]
    [0.667, 2.0, 0.0]
    """
    target = np.asarray(target)
    ann = as_annotated(annotated, target.shape)
    flat = target.ravel()
    if ann is None:
        counts = np.bincount(flat, minlength=num_classes)
    elif num_classes > 127:
        counts = np.bincount(flat[ann.ravel()], minlength=num_classes)
    else:
        # One pass: classes of annotated pixels counted in the bins num_classes .. 2·num_classes.
        both = ann.ravel().view(np.uint8) * np.uint8(num_classes) + flat.astype(np.uint8)
        counts = np.bincount(both, minlength=2 * num_classes)[num_classes:]
    n = int(counts.sum())
    per_class = np.zeros(num_classes, dtype=np.float64)
    present = counts > 0
    if n:
        per_class[present] = n / (present.sum() * counts[present])
    return per_class.astype(np.float32)


def border_weight_map(
    labels: np.ndarray,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_balance: bool = True,
    annotated: np.ndarray | None = None,
    spacing: float | Sequence[float] | None = None,
    num_classes: int = 2,
    method: str = "auto",
    class_weight: Sequence[float] | None = None,
    tissue: bool = False,
) -> np.ndarray:
    """The paper's weight map ``w = w_c + w0·exp(-(d1 + d2)² / (2σ²))``.

    Parameters
    ----------
    labels : ndarray, 2D or 3D
        Instance ids or a binary mask, as for :func:`napari_unet.core.targets.make_target`.
        Touching cells are separated first; the separated instances are the cells.
    w0 : float
        Weight of the border term (paper: 10).
    sigma : float
        Width of the border term, in the units of ``spacing`` (paper: ≈ 5 pixels).
    class_balance : bool
        True: ``w_c`` is the inverse class frequency over the annotated pixels, scaled so that
        each class carries the same total weight and the mean of ``w_c`` there is 1.
        False: ``w_c = 1``.
    annotated : bool ndarray, optional
        True where the annotation is complete; the weight is 0 outside. Default: everywhere.
    spacing : float or sequence of float, optional
        Pixel size per axis (anisotropic 3D data); distances and ``sigma`` are in these units.
    num_classes : {2, 3}
        Classes of the target that ``w_c`` balances (see ``make_target``). The border term is
        always computed on the pixels that are not cells of the 2-class target.
    method : {"auto", "numba", "scipy"}
        Distance computation: the separable sweep compiled by numba (fast; default when
        installed) or one cropped scipy distance transform per cell (exact, slower).
    class_weight : sequence of float, optional
        Fixed ``w_c`` per class (``num_classes`` values, e.g. :func:`class_weight_vector` of
        the whole image) instead of balancing over these pixels; overrides ``class_balance``.
    tissue : bool
        ``w_c`` balances the classes of the tissue target (background, cell, wall;
        ``make_target(..., tissue=True)``, 3 classes); the border term is the same, so the
        walls between cells weigh as the paper's gaps between touching cells.

    Returns
    -------
    float32 ndarray, same shape as ``labels``
        ``d1``/``d2`` are the distances from a background pixel to the nearest and second-nearest
        cell; with fewer than two cells the border term is 0. Zero outside ``annotated``, and
        all zeros if nothing is annotated. The term is dropped where it is below ``1e-6·w0``.

    Examples
    --------
    Two cells with a 2-pixel gap: in the gap d1 + d2 = 1 + 2, so w = 1 + 10·exp(-9/50); at the
    right edge d1 + d2 = 1 + 5:

    >>> import numpy as np
    >>> labels = np.zeros((1, 7), dtype=np.int32)
    >>> labels[0, :2], labels[0, 4:6] = 1, 2
    >>> w = border_weight_map(labels, class_balance=False)
    >>> np.round(w, 3)
    array([[1.   , 1.   , 9.353, 9.353, 1.   , 1.   , 5.868]], dtype=float32)
    """
    w0 = float(w0)
    sigma = float(sigma)
    if not math.isfinite(w0) or w0 < 0:
        raise ValueError(f"w0: expected a finite weight >= 0 (paper: 10), got {w0!r}")
    if not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma: expected a width > 0 in pixels (paper: about 5), got {sigma!r}")
    if num_classes not in (2, 3) or isinstance(num_classes, bool):
        raise ValueError(f"num_classes: expected 2 or 3, got {num_classes!r}")
    inst = to_instances(labels)
    target2, _ = make_target(inst)
    ann = as_annotated(annotated, inst.shape)
    space = check_spacing(spacing, inst.ndim)
    if ann is not None and not ann.any():
        return np.zeros(inst.shape, dtype=np.float32)

    if class_weight is not None:
        per_class = np.asarray(class_weight, dtype=np.float32)
        if per_class.shape != (num_classes,):
            raise ValueError(f"class_weight: expected {num_classes} values (one per class), "
                             f"got shape {per_class.shape}")
        target = target2 if num_classes == 2 and not tissue else make_target(
            inst, annotated=ann, num_classes=num_classes, tissue=tissue)[0]
        weights = np.take(per_class, target)
        if ann is not None:
            weights *= ann
    elif class_balance:
        target = target2 if num_classes == 2 and not tissue else make_target(
            inst, annotated=ann, num_classes=num_classes, tissue=tissue)[0]
        weights = class_weights(target, annotated=ann, num_classes=num_classes)
    else:
        weights = np.ones(inst.shape, dtype=np.float32) if ann is None else ann.astype(np.float32)

    if w0 > 0:
        cells = np.where(target2 == 1, inst, 0)
        if inst.dtype != np.int32:  # ids beyond int32: renumber for the int32 kernels
            cells = np.unique(cells, return_inverse=True)[1].reshape(inst.shape)
        cells = cells.astype(np.int32, copy=False)
        where = target2 == 0 if ann is None else (target2 == 0) & ann
        cutoff = sigma * math.sqrt(2.0 * math.log(1.0 / TRUNCATION))
        weights += border_term(
            cells, where, spacing=space, cutoff=cutoff, w0=w0, sigma=sigma, method=method
        )
    return weights
