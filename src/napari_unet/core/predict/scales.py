"""Prediction at several scales, averaged: the image resized by each scale (linear
interpolation), predicted tile by tile, its probabilities resized back to the image's own size
and averaged before the post-processing, which runs once.

Which scales a model uses is stored with it (:func:`stored_scales`), in
``metadata["postprocess"]["scales"]``: either a list, for every image, or a mapping by the kind
of image, ``{"gray": [1.0], "colour": [1.0, 0.7, 1.4]}`` (a kind it does not name: its own
scale only). A colour image is one whose raw channels are not all equal (:func:`is_colour`),
judged before a one-channel model turns it gray. The shipped ``nuclei`` model averages
1, 0.7 and 1.4 on colour images: on the 80 DSB validation images colour F1@0.5 0.684 → 0.717
(gray 0.910 → 0.911) for 3.45× the pixels, which gray images, 86 % of DSB, do not pay.

The image is normalised once, at its own size, and the normalised image is resized: every
scale sees the same intensities and the same polarity (a bright background turned dark or not
by the image's own median, never by a resized copy's).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence

import numpy as np

from napari_unet.core.predict.tiled import PredictProgress, as_chw, iter_predict_tiled

__all__ = ["OWN_SIZE", "check_scales", "is_colour", "iter_predict_scales", "resize", "stored_scales"]

#: the scales of a model that stores none: the image at its own size
OWN_SIZE: tuple[float, ...] = (1.0,)


def check_scales(scales, *, name: str = "scales") -> tuple[float, ...]:
    """``scales`` as a tuple of positive floats; a ValueError naming ``name`` otherwise.

    Examples
    --------
    >>> check_scales([1, 0.7, 1.4])
    (1.0, 0.7, 1.4)
    >>> check_scales([])
    Traceback (most recent call last):
    ...
    ValueError: scales: expected one or more positive factors (e.g. 1 0.7 1.4), got []; give 1 to predict at the image's own size only
    """
    try:
        values = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        values = ()
    if not values or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(
            f"{name}: expected one or more positive factors (e.g. 1 0.7 1.4), got "
            f"{scales!r}; give 1 to predict at the image's own size only"
        )
    return values


def is_colour(image: np.ndarray, channel_axis: int | None) -> bool:
    """Whether a raw image is colour: channels along ``channel_axis`` (the first three of
    RGBA; alpha is no colour) not all equal. A gray image stored as RGB is gray.

    Examples
    --------
    >>> rgb = np.zeros((4, 5, 3), np.uint8)
    >>> is_colour(rgb, -1), is_colour(rgb[..., 0], None)
    (False, False)
    >>> rgb[1, 1, 0] = 200
    >>> is_colour(rgb, -1)
    True
    """
    if channel_axis is None:
        return False
    a = np.moveaxis(np.asarray(image), channel_axis, 0)
    a = a[:3] if a.shape[0] == 4 else a
    return bool(any(not np.array_equal(a[0], c) for c in a[1:]))


def stored_scales(metadata: dict | None, *, colour: bool) -> tuple[float, ...]:
    """The scales a model predicts a gray or a ``colour`` image at:
    ``metadata["postprocess"]["scales"]``, a list for every image or ``{"gray": [...],
    "colour": [...]}``; (1.0,) for what it does not name.

    Examples
    --------
    >>> meta = {"postprocess": {"scales": {"colour": [1, 0.7, 1.4]}}}
    >>> stored_scales(meta, colour=True), stored_scales(meta, colour=False)
    ((1.0, 0.7, 1.4), (1.0,))
    >>> stored_scales(None, colour=True)
    (1.0,)
    """
    stored = ((metadata or {}).get("postprocess") or {}).get("scales")
    where = "metadata['postprocess']['scales']"
    if stored is None:
        return OWN_SIZE
    if isinstance(stored, dict):
        unknown = set(stored) - {"gray", "colour"}
        if unknown:
            raise ValueError(f"{where}: expected the kinds 'gray' and 'colour', got "
                             f"{sorted(unknown)} (was the model file written by another tool?)")
        kind = "colour" if colour else "gray"
        return check_scales(stored[kind], name=f"{where}[{kind!r}]") if kind in stored \
            else OWN_SIZE
    return check_scales(stored, name=where)


def resize(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(C, H, W) float32 resized to (C, *shape) by linear interpolation (corners kept, as
    :func:`scipy.ndimage.zoom` with ``order=1``; its last row and column, which rounding can
    put a hair outside the input, take the edge's value, not zero).

    Examples
    --------
    >>> resize(np.arange(6, dtype=np.float32).reshape(1, 2, 3), (3, 5)).shape
    (1, 3, 5)
    """
    from scipy import ndimage as ndi

    x = np.asarray(x, dtype=np.float32)
    if tuple(x.shape[1:]) == tuple(shape):
        return x
    factors = (1.0, *(t / n for t, n in zip(shape, x.shape[1:], strict=True)))
    out = ndi.zoom(x, factors, order=1, mode="nearest")
    return out[(slice(None), *(slice(0, t) for t in shape))]


def iter_predict_scales(
    model,
    image: np.ndarray,
    scales: Sequence[float],
    *,
    tta: bool = False,
    flip_std: bool = False,
    **options,
) -> Generator[PredictProgress, None, np.ndarray]:
    """Probabilities of a normalised (H, W) or (C, H, W) image averaged over ``scales``: the
    image resized by each (sides ``round(n * s)``, at least 1), predicted by
    :func:`~napari_unet.core.predict.iter_predict_tiled` (``tta``: the flips within each
    scale; ``options``: its tile, batch and device), resized back to (H, W), averaged.

    Scales (1,) is :func:`~napari_unet.core.predict.iter_predict_tiled` itself. With
    ``flip_std`` and more than one pass (``tta`` or several scales) the last event's
    ``flip_std`` is, per pixel, the standard deviation of the foreground probability over every
    pass (each flip at each scale, brought back to the image's size).

    Examples
    --------
    >>> from napari_unet.core.model import UNet
    >>> net = UNet(depth=1, base_channels=2)
    >>> last = list(iter_predict_scales(net, np.ones((1, 20, 30), np.float32), (1, 0.5)))[-1]
    >>> last.result.shape, last.flip_std is None
    ((2, 20, 30), True)
    """
    scales = check_scales(scales)
    if scales == OWN_SIZE:
        return (yield from iter_predict_tiled(model, image, tta=tta, flip_std=flip_std,
                                              **options))
    if getattr(model, "ndim", 2) != 2:
        raise ValueError(f"scales: several scales are for 2D models (images and stacks plane "
                         f"by plane), got {scales} for a 3D model; give scales=(1,)")
    image = as_chw(model, np.asarray(image, dtype=np.float32))
    size = image.shape[1:]
    spread = flip_std and (tta or len(scales) > 1)
    mean = squares = None
    done = 0
    for i, scale in enumerate(scales):
        shape = tuple(max(1, round(n * scale)) for n in size)
        last = None
        for ev in iter_predict_tiled(model, resize(image, shape), tta=tta,
                                     flip_std=spread and tta, **options):
            if ev.result is not None:
                last = ev
                continue
            left = sum(s * s for s in scales[i + 1:]) / (scale * scale)
            yield PredictProgress(done + ev.done, done + ev.total + math.ceil(ev.total * left),
                                  message=f"scale {scale:g}")
        done += last.total
        prob = resize(last.result, size)
        mean = prob if mean is None else mean + prob
        if spread:  # E[fg²] over this scale's passes: its spread² + its mean²
            fg = 1.0 - prob[0]
            sq = fg * fg if last.flip_std is None else fg * fg + resize(last.flip_std[None],
                                                                         size)[0] ** 2
            squares = sq if squares is None else squares + sq
    mean = (mean / len(scales)).astype(np.float32)
    std = None
    if spread:
        std = np.sqrt(np.clip(squares / len(scales) - (1.0 - mean[0]) ** 2, 0.0, None))
        std = std.astype(np.float32)
    yield PredictProgress(done, done, result=mean, message="done", flip_std=std)
    return mean
