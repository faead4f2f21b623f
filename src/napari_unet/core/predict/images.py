"""Raw images and stacks: normalised as the model's metadata says, then predicted tile by tile
(:mod:`napari_unet.core.predict.tiled`) at the scales the model stores for the kind of image
(:mod:`napari_unet.core.predict.scales`); a 2D model predicts a stack plane by plane."""

from __future__ import annotations

from collections.abc import Generator, Sequence

import numpy as np

from napari_unet.core.model.unet import UNet
from napari_unet.core.normalize import as_model_channels, normalize, stored_normalization
from napari_unet.core.predict.scales import (
    check_scales,
    is_colour,
    iter_predict_scales,
    stored_scales,
)
from napari_unet.core.predict.tiled import PredictProgress, as_chw, run_to_end

__all__ = ["iter_predict_image", "iter_predict_stack", "normalizer", "predict_image",
           "predict_stack"]


def normalizer(metadata: dict | None, *, channel_axis: int | None = 0):
    """The normalisation stored with a model, as a function ``image -> float32 image``."""
    norm = stored_normalization(metadata)
    if norm is None:
        return lambda a: np.asarray(a, dtype=np.float32)
    return lambda a: normalize(a, low=norm["low"], high=norm["high"], channel_axis=channel_axis,
                               invert=norm.get("invert", False))


def _raw_to_chw(model: UNet, image: np.ndarray, channel_axis: int | None) -> np.ndarray:
    image = np.asarray(image)
    if channel_axis is not None:
        image = np.moveaxis(image, channel_axis, 0)
    elif image.ndim == 3 and model.in_channels == 1 and model.ndim == 2:
        raise ValueError(
            f"image: got a 3D array {image.shape} for a model with 1 input channel; give "
            "channel_axis for a multi-channel image or use predict_stack for (Z, Y, X) stacks"
        )
    return as_chw(model, image)


def image_scales(metadata: dict | None, image: np.ndarray, channel_axis: int | None,
                 scales: Sequence[float] | None) -> tuple[float, ...]:
    """``scales`` checked, or (None) those the model stores for this raw image's kind
    (:func:`~napari_unet.core.predict.scales.stored_scales`, colour judged on the raw
    channels by :func:`~napari_unet.core.predict.scales.is_colour`)."""
    if scales is not None:
        return check_scales(scales)
    return stored_scales(metadata, colour=is_colour(image, channel_axis))


def iter_predict_image(
    model: UNet,
    image: np.ndarray,
    *,
    metadata: dict | None = None,
    channel_axis: int | None = None,
    tta: bool = False,
    device=None,
    tile_shape: Sequence[int] | None = None,
    batch_size: int = 1,
    flip_std: bool = False,
    scales: Sequence[float] | None = None,
) -> Generator[PredictProgress, None, np.ndarray]:
    """:func:`predict_image` as a generator of progress events (for the GUI): the last event's
    ``result`` holds the probabilities (and ``flip_std``, see
    :func:`~napari_unet.core.predict.scales.iter_predict_scales`).

    Examples
    --------
    >>> net = UNet(depth=1, base_channels=2)
    >>> list(iter_predict_image(net, np.ones((20, 30))))[-1].result.shape
    (2, 20, 30)
    """
    scales = image_scales(metadata, image, channel_axis, scales)
    image, channel_axis = as_model_channels(image, channel_axis=channel_axis,
                                            in_channels=model.in_channels, metadata=metadata)
    chw = normalizer(metadata, channel_axis=0)(_raw_to_chw(model, image, channel_axis))
    return (
        yield from iter_predict_scales(
            model, chw, scales, tile_shape=tile_shape, batch_size=batch_size, device=device,
            tta=tta, flip_std=flip_std,
        )
    )


def predict_image(
    model: UNet,
    image: np.ndarray,
    *,
    metadata: dict | None = None,
    channel_axis: int | None = None,
    tta: bool = False,
    device=None,
    tile_shape: Sequence[int] | None = None,
    batch_size: int = 1,
    scales: Sequence[float] | None = None,
) -> np.ndarray:
    """Normalise a raw image as the model was trained (``metadata["normalization"]``), then
    :func:`predict_tiled` at each of ``scales`` (default: those the model stores for the
    image's kind, :func:`image_scales`), averaged. Returns float32 (num_classes, *spatial).

    ``image`` matches ``model.ndim``: (H, W) for a 2D model, a (Z, Y, X) volume for a 3D one
    (or either with channels at ``channel_axis``); the percentiles are those of the whole image
    (volume), per channel.

    Examples
    --------
    >>> net = UNet(depth=1, base_channels=2)
    >>> predict_image(net, np.arange(600, dtype=np.uint16).reshape(20, 30)).shape
    (2, 20, 30)
    """
    return run_to_end(
        iter_predict_image(
            model, image, metadata=metadata, channel_axis=channel_axis, tta=tta, device=device,
            tile_shape=tile_shape, batch_size=batch_size, scales=scales,
        )
    )


def iter_predict_stack(
    model: UNet,
    stack: np.ndarray,
    *,
    metadata: dict | None = None,
    channel_axis: int | None = None,
    tta: bool = False,
    device=None,
    tile_shape: Sequence[int] | None = None,
    batch_size: int = 1,
    flip_std: bool = False,
    scales: Sequence[float] | None = None,
) -> Generator[PredictProgress, None, np.ndarray]:
    """Predict a (Z or T, Y, X) stack plane by plane with the 2D model, normalising each plane
    (``scales``: as :func:`predict_image`, the model's stored ones judged plane by plane).

    ``channel_axis`` counts in the full array (e.g. 1 for (Z, C, Y, X)). Yields progress per tile
    batch with ``plane``/``planes`` set; the last event (and return value) has ``result`` of shape
    (Z, num_classes, Y, X) (and with ``tta`` and ``flip_std``, ``flip_std`` (Z, Y, X)).

    Examples
    --------
    >>> net = UNet(depth=1, base_channels=2)
    >>> ev = list(iter_predict_stack(net, np.random.rand(3, 20, 20)))
    >>> ev[-1].result.shape, ev[-1].planes
    ((3, 2, 20, 20), 3)
    """
    if model.ndim != 2:
        raise ValueError(
            f"model: a {model.ndim}D model predicts a volume as a whole; use predict_image for "
            "(Z, Y, X) volumes (plane by plane is for 2D models)"
        )
    stack = np.asarray(stack)
    if channel_axis is not None:
        stack = np.moveaxis(stack, channel_axis, 1)
    if stack.ndim not in (3, 4):
        raise ValueError(f"stack: expected (Z, Y, X) or (Z, C, Y, X), got shape {stack.shape}")
    norm = normalizer(metadata, channel_axis=0)
    out = spread = None
    for z, plane in enumerate(stack):
        plane_scales = image_scales(metadata, plane, 0 if plane.ndim == 3 else None, scales)
        if plane.ndim == 3:  # (C, Y, X): a colour plane becomes gray for a one-channel model
            plane, _ = as_model_channels(plane, channel_axis=0, in_channels=model.in_channels,
                                         metadata=metadata)
        chw = norm(as_chw(model, plane, name=f"stack plane {z}"))
        last = None
        for ev in iter_predict_scales(
            model, chw, plane_scales, tile_shape=tile_shape, batch_size=batch_size,
            device=device, tta=tta, flip_std=flip_std,
        ):
            if ev.result is not None:
                last = ev
            else:
                yield PredictProgress(ev.done, ev.total, plane=z, planes=len(stack))
        if out is None:
            out = np.empty((len(stack), *last.result.shape), np.float32)
        out[z] = last.result
        if last.flip_std is not None:  # planes of one pass (gray, one scale) do not spread
            if spread is None:
                spread = np.zeros((len(stack), *last.flip_std.shape), np.float32)
            spread[z] = last.flip_std
    yield PredictProgress(1, 1, plane=len(stack) - 1, planes=len(stack), result=out,
                          flip_std=spread)
    return out


def predict_stack(model: UNet, stack: np.ndarray, **options) -> np.ndarray:
    """Run :func:`iter_predict_stack` to the end; returns float32 (Z, num_classes, Y, X)."""
    return run_to_end(iter_predict_stack(model, stack, **options))
