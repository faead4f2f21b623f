"""Image/label pairs for training: normalisation, patch sampling, validation split.

Normalisation is robust and per image: each channel is mapped so that its ``low`` and ``high``
percentiles become 0 and 1. The settings are stored in the model's metadata so that prediction
normalises the same way.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_NORMALIZATION", "normalize"]

#: Normalisation stored with every model unless the user chooses otherwise.
DEFAULT_NORMALIZATION: dict = {"method": "percentile", "low": 1.0, "high": 99.8}


def normalize(
    image: np.ndarray,
    *,
    low: float = 1.0,
    high: float = 99.8,
    channel_axis: int | None = None,
    eps: float = 1e-6,
) -> np.ndarray:
    """Map the ``low``/``high`` percentiles of each channel to 0/1 (values outside are kept).

    Parameters
    ----------
    image : ndarray
        Any real dtype, any number of dimensions.
    low, high : float
        Percentiles (0–100) mapped to 0 and 1.
    channel_axis : int, optional
        Axis of the channels, normalised independently; None: the whole array at once.
    eps : float
        Added to the percentile range so a constant image gives zeros, not NaN.

    Returns
    -------
    float32 ndarray of the same shape.

    Examples
    --------
    >>> out = normalize(np.arange(101, dtype=np.uint8), low=0, high=100)
    >>> float(out[0]), round(float(out[-1]), 4)
    (0.0, 1.0)
    """
    image = np.asarray(image)
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise TypeError(f"image: expected a real-valued array, got dtype {image.dtype}")
    if np.iscomplexobj(image):
        raise TypeError("image: expected a real-valued array, got a complex one")
    if not 0 <= low < high <= 100:
        raise ValueError(f"low, high: expected 0 <= low < high <= 100, got {low!r}, {high!r}")
    x = image.astype(np.float32, copy=False)
    if channel_axis is None:
        lo, hi = np.percentile(x, [low, high])
        return ((x - lo) / (hi - lo + eps)).astype(np.float32)
    axis = channel_axis % x.ndim
    other = tuple(a for a in range(x.ndim) if a != axis)
    lo, hi = np.percentile(x, [low, high], axis=other, keepdims=True)
    return ((x - lo) / (hi - lo + eps)).astype(np.float32)
