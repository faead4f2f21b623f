"""Checks of user data shared by training, prediction, evaluation and the GUI.

One rule per kind of bad input, applied wherever the data enters (the command line's readers,
:class:`~napari_unet.core.training.Trainer`, :func:`~napari_unet.core.normalize.normalize`, hence
every prediction path), so the same input gets the same answer everywhere:

- **NaN / inf pixels are refused**, with their count and the position of the first. A single NaN
  makes every percentile, every normalised pixel and every probability NaN (a silent "0 cells");
  replacing it by a guess would change the data behind the user's back. Fix: replace them
  (``numpy.nan_to_num(image, nan=0.0)``, or the image's median) or crop them away.
- **Empty images are refused** (a side of 0 pixels); for training, images with a side below
  :data:`MIN_TRAIN_SIDE` pixels are refused (too small to hold a cell and its border).
- **A pixel (voxel) spacing is one positive, finite size per axis** (a number: the same for
  every axis; None: 1 for every axis).
- **Training needs at least one labelled cell** across all pairs; a pair without any cell is
  allowed (it teaches background) but logged as a warning.

Examples
--------
>>> import numpy as np
>>> check_finite(np.ones((4, 4)))
>>> image = np.ones((4, 4)); image[2, 1] = np.nan
>>> check_finite(image, what="image")
Traceback (most recent call last):
...
ValueError: image: 1 NaN/inf pixel(s) (the first at (2, 1)) of 16; NaN/inf pixels are refused: replace them (e.g. numpy.nan_to_num(image, nan=0.0)) or crop them away
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

__all__ = ["MIN_TRAIN_SIDE", "check_finite", "check_not_empty", "check_spacing",
           "check_training_pairs"]

logger = logging.getLogger(__name__)

#: Smallest image side (pixels) accepted for training.
MIN_TRAIN_SIDE = 8


def check_finite(array, *, what: str = "image") -> None:
    """Raise ValueError when ``array`` holds NaN or infinite values (the rule above).

    Integer and boolean arrays pass without a scan.
    """
    a = np.asarray(array)
    if not np.issubdtype(a.dtype, np.inexact):
        return
    bad = ~np.isfinite(a)
    count = int(np.count_nonzero(bad))
    if not count:
        return
    first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad.ravel())), a.shape))
    raise ValueError(
        f"{what}: {count} NaN/inf pixel(s) (the first at {first}) of {a.size}; NaN/inf pixels "
        "are refused: replace them (e.g. numpy.nan_to_num(image, nan=0.0)) or crop them away"
    )


def check_not_empty(shape: Sequence[int], *, what: str = "image", minimum: int = 1) -> None:
    """Raise ValueError when a spatial side of ``shape`` is below ``minimum`` pixels.

    Examples
    --------
    >>> check_not_empty((0, 5))
    Traceback (most recent call last):
    ...
    ValueError: image: got an empty image of shape (0, 5); expected at least 1 pixel per side; remove or replace the empty image
    """
    shape = tuple(int(s) for s in shape)
    if any(s < 1 for s in shape):
        raise ValueError(
            f"{what}: got an empty image of shape {shape}; expected at least 1 pixel per "
            "side; remove or replace the empty image"
        )
    if min(shape, default=0) < minimum:
        raise ValueError(
            f"{what}: the image of shape {shape} is too small; expected at least {minimum} "
            f"pixels per side (a cell and its border); use larger images or crops"
        )


def check_training_pairs(pairs, *, names: Sequence[str] | None = None) -> None:
    """Check TrainingPairs before training: finite, large enough, at least one cell overall.

    ``names`` (one per pair, e.g. file names) make the messages point at the file.

    Examples
    --------
    >>> from napari_unet.core.training.data import TrainingPair
    >>> check_training_pairs([TrainingPair(np.zeros((16, 16)), np.zeros((16, 16), int))])
    Traceback (most recent call last):
    ...
    ValueError: labels: no labelled cell in any of the 1 image(s) (all labels are 0), so there is nothing to learn; paint at least one cell
    """
    names = list(names) if names is not None else [f"pair {i}" for i in range(len(pairs))]
    with_cells = 0
    for name, pair in zip(names, pairs, strict=True):
        check_not_empty(pair.shape, what=f"{name}: image", minimum=MIN_TRAIN_SIDE)
        check_finite(pair.image, what=f"{name}: image")
        if np.any(pair.labels):
            with_cells += 1
        else:
            logger.warning("%s: no labelled cell; the image only teaches background", name)
    if pairs and not with_cells:
        raise ValueError(
            f"labels: no labelled cell in any of the {len(pairs)} image(s) (all labels are 0), "
            "so there is nothing to learn; paint at least one cell"
        )


def check_spacing(spacing, ndim: int) -> tuple[float, ...]:
    """The pixel (voxel) size per axis as ``ndim`` floats: one number for every axis, None for
    ones; ValueError naming the argument otherwise.

    >>> check_spacing((4, 1, 1), 3), check_spacing(None, 2), check_spacing(2, 2)
    ((4.0, 1.0, 1.0), (1.0, 1.0), (2.0, 2.0))
    """
    try:
        values = np.asarray(1.0 if spacing is None else spacing, dtype=np.float64)
    except (TypeError, ValueError):
        values = np.zeros(0)
    if values.ndim == 0:
        values = np.full(ndim, float(values))
    if values.shape != (ndim,) or not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(
            f"spacing: expected one positive pixel size per axis ({ndim} values), got "
            f"{spacing!r}; e.g. spacing=(2.0, 1.0, 1.0) for a z step twice the xy pixel"
        )
    return tuple(float(v) for v in values)
