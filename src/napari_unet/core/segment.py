"""The one path from an image to labels: normalise, predict tile by tile, post-process.

:func:`iter_segment` is what the Predict widget, ``napari-unet predict``, ``evaluate`` and
``demo`` drive (``napari-unet predict`` on zarr input goes block by block through
:mod:`napari_unet.core.bigdata`, with the same tiler and the same :class:`PostprocessSettings`).
The post-processing defaults are those stored with the model (``metadata["postprocess"]``,
chosen on the validation band at the end of training), overridden by what the caller gives.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import numpy as np

from napari_unet.core.postprocess import PostprocessSettings
from napari_unet.core.predict import (
    PredictProgress,
    iter_predict_image,
    iter_predict_stack,
    return_value,
)

__all__ = ["iter_segment", "segment"]


def iter_segment(
    model,
    image: np.ndarray,
    *,
    metadata: dict | None = None,
    settings: PostprocessSettings | None = None,
    stack: bool = False,
    channel_axis: int | None = None,
    tta: bool = False,
    device=None,
    tile_shape: Sequence[int] | None = None,
    batch_size: int = 1,
) -> Generator[PredictProgress, None, tuple[np.ndarray, np.ndarray]]:
    """Segment a raw image (or a stack plane by plane), yielding progress events.

    Parameters
    ----------
    model : UNet
    image : ndarray
        Raw (H, W) / (H, W, C) with ``channel_axis``; with ``stack=True`` (Z, Y, X) or
        (Z, C, Y, X) (``channel_axis`` counted in the full array).
    metadata : dict, optional
        The model's metadata: normalisation and default post-processing.
    settings : PostprocessSettings, optional
        Default: ``PostprocessSettings.from_metadata(metadata)``.
    tta, device, tile_shape, batch_size
        As :func:`napari_unet.core.predict.predict_tiled`.

    Yields
    ------
    PredictProgress
        Per tile batch; the last event has ``result`` (float32 probabilities, (K, H, W) or
        (Z, K, H, W)) and ``labels`` (int32, (H, W) or (Z, H, W)) set. Returns (prob, labels).

    Examples
    --------
    >>> from napari_unet.core.model import UNet
    >>> last = list(iter_segment(UNet(depth=1, base_channels=2), np.ones((20, 30))))[-1]
    >>> last.result.shape, last.labels.shape, last.labels.dtype
    ((2, 20, 30), (20, 30), dtype('int32'))
    """
    if settings is None:
        settings = PostprocessSettings.from_metadata(metadata)
    options = dict(metadata=metadata, channel_axis=channel_axis, tta=tta, device=device,
                   tile_shape=tile_shape, batch_size=batch_size)
    events = (iter_predict_stack if stack else iter_predict_image)(model, image, **options)
    prob = last = None
    for event in events:
        if event.result is not None:
            prob, last = event.result, event
        else:
            yield event
    labels = (np.stack([settings.labels(p) for p in prob]) if stack else settings.labels(prob))
    yield PredictProgress(last.done, last.total, plane=last.plane, planes=last.planes,
                          result=prob, labels=labels, message="done")
    return prob, labels


def segment(model, image: np.ndarray, **options) -> tuple[np.ndarray, np.ndarray]:
    """Run :func:`iter_segment` to the end; returns (probabilities, labels).

    Examples
    --------
    >>> from napari_unet.core.model import UNet
    >>> prob, labels = segment(UNet(depth=1, base_channels=2), np.ones((20, 20)), stack=False)
    >>> prob.shape, labels.shape
    ((2, 20, 20), (20, 20))
    """
    return return_value(iter_segment(model, image, **options))
