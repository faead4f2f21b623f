"""Instance ids from labels, and annotation masks: what targets and the sparse rule share.

:func:`to_instances` reads an instance map or a binary/semantic mask as cells;
:func:`as_annotated` validates a mask of pixels (annotated regions, background strokes). Both are
re-exported by :mod:`napari_unet.core.targets`, where they are documented for users.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["as_annotated", "check_mask_shape", "to_instances"]

_INT32_MAX = np.iinfo(np.int32).max


def to_instances(labels: np.ndarray) -> np.ndarray:
    """Instance ids (0 = background) from an instance map or a binary/semantic mask.

    Parameters
    ----------
    labels : ndarray, 2D or 3D
        Instance ids (any integer dtype, ids need not be consecutive), a ``bool`` mask, or a
        binary mask whose only values are ``{0, v}`` (e.g. 255 = cell). Floats are accepted when
        every value is a non-negative integer.

    Returns
    -------
    instances : int32 ndarray (int64 if an id exceeds 2**31 - 1), same shape
        For instance input the ids are kept as they are. For binary input each 4-connected
        (6-connected in 3D) component of the foreground becomes one cell, numbered 1..N.

    Raises
    ------
    TypeError
        If ``labels`` is not a numeric array.
    ValueError
        If ``labels`` is not 2D/3D, or holds negative, non-integral or non-finite values.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.array([[255, 255, 0, 255],
    ...                  [0,     0, 0, 255]], dtype=np.uint8)
    >>> to_instances(mask)
    array([[1, 1, 0, 2],
           [0, 0, 0, 2]], dtype=int32)
    >>> to_instances(np.array([[7, 7, 0, 3]]*2)).tolist()  # instance ids are kept
    [[7, 7, 0, 3], [7, 7, 0, 3]]
    """
    arr = np.asarray(labels)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"labels: expected a 2D (H, W) or 3D (D, H, W) array, got shape {arr.shape}; "
            "pass one image's labels at a time"
        )
    if arr.dtype == bool:
        return _components(arr)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(
            f"labels: expected an integer, bool or float array, got dtype {arr.dtype}; "
            "convert the labels layer to integers"
        )
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.int32)
    lo, hi = arr.min(), arr.max()
    if np.issubdtype(arr.dtype, np.floating):
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("labels: expected finite values, got NaN or infinity; fill them with 0")
        if np.any(arr != np.round(arr)):
            raise ValueError(
                "labels: expected integral instance ids (0 = background), got non-integral "
                "float values; round or cast the labels to integers"
            )
    if lo < 0:
        raise ValueError(
            f"labels: expected non-negative ids (0 = background), got a minimum of {lo}; "
            "use 0 for background and positive ids for cells"
        )
    if hi == 0:
        return np.zeros(arr.shape, dtype=np.int32)
    if np.all((arr == 0) | (arr == hi)):  # only {0, v}: binary mask
        return _components(arr != 0)
    dtype = np.int32 if hi <= _INT32_MAX else np.int64
    if hi > np.iinfo(np.int64).max:
        raise ValueError(f"labels: ids above 2**63 - 1 are not supported, got {hi}; relabel")
    return arr.astype(dtype, copy=False)


def _components(mask: np.ndarray) -> np.ndarray:
    structure = ndi.generate_binary_structure(mask.ndim, 1)
    out, _ = ndi.label(mask, structure=structure, output=np.int32)
    return out


def check_mask_shape(mask, shape: tuple[int, ...], *, name: str,
                     fix: str = "crop or pad the mask to the labels") -> np.ndarray:
    """``mask`` as an array of the labels' ``shape``; else a ValueError naming ``name`` and
    the ``fix`` (the one shape rule of every mask: annotated regions, background strokes).

    Examples
    --------
    >>> check_mask_shape([[0, 2]], (1, 2), name="background").tolist()
    [[0, 2]]
    """
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(
            f"{name}: expected a mask of the labels' shape {tuple(shape)}, got {mask.shape}; "
            f"{fix}"
        )
    return mask


def as_annotated(
    annotated: np.ndarray | None, shape: tuple[int, ...], *, name: str = "annotated"
) -> np.ndarray | None:
    """Validate an ``annotated`` mask (True where the annotation is complete) → bool or None.

    ``name`` is the argument named in error messages (e.g. ``"background"``).

    Examples
    --------
    >>> as_annotated([[1, 0]], (1, 2))
    array([[ True, False]])
    """
    if annotated is None:
        return None
    ann = check_mask_shape(annotated, shape, name=name)
    if ann.dtype == bool:
        return ann
    if not np.issubdtype(ann.dtype, np.number) or not np.all((ann == 0) | (ann == 1)):
        raise ValueError(
            f"{name}: expected a boolean mask (or only 0/1 values), got dtype "
            f"{ann.dtype} with other values; pass `mask > 0`"
        )
    return ann.astype(bool)
