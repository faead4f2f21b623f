"""The one path from an image to labels: normalise, predict tile by tile, post-process.

:func:`iter_segment` is what the Predict widget, ``napari-unet predict``, ``evaluate`` and
``demo`` drive (``napari-unet predict`` on zarr input goes block by block through
:mod:`napari_unet.core.predict.blockwise`, with the same tiler and the same :class:`PostprocessSettings`).
The post-processing defaults are those stored with the model (``metadata["postprocess"]``,
chosen on the validation band at the end of training), overridden by what the caller gives.

A 3D model (``model.ndim == 3``) segments a (Z, Y, X) volume as a volume, with the voxel
``spacing`` stored with the model (:func:`stored_spacing`) unless the caller gives one; a 2D
model segments a stack plane by plane (``stack=True``).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import numpy as np

from napari_unet.core.predict.images import iter_predict_image, iter_predict_stack
from napari_unet.core.predict.postprocess import PostprocessSettings, stored_tta
from napari_unet.core.predict.tiled import PredictProgress, return_value

__all__ = ["iter_segment", "number_over_planes", "segment", "stored_spacing"]


def number_over_planes(labels: np.ndarray) -> np.ndarray:
    """Per-plane labels of a (Z, Y, X) stack with each plane's ids continuing after the plane
    before: one id per object of the stack (as block-wise prediction numbers them), so that a
    cell's id names it, and its row in a table, on any plane.

    Examples
    --------
    >>> number_over_planes(np.array([[[1, 0, 2]], [[0, 1, 1]]])).tolist()
    [[[1, 0, 2]], [[0, 3, 3]]]
    """
    out = np.array(labels, dtype=np.int32)
    offset = 0
    for plane in out:
        top = int(plane.max(initial=0))
        plane[plane > 0] += offset
        offset += top
    return out


def stored_spacing(metadata: dict | None, ndim: int = 3) -> tuple[float, ...] | None:
    """The voxel spacing a model was trained with, from its metadata (``"spacing"`` at the top,
    in ``"training"`` or in ``"architecture"``), or None; only if it has ``ndim`` entries.

    Examples
    --------
    >>> stored_spacing({"training": {"spacing": [5, 1, 1]}})
    (5.0, 1.0, 1.0)
    >>> stored_spacing({"architecture": {"ndim": 2}}) is None
    True
    """
    meta = metadata or {}
    for where in (meta, meta.get("training") or {}, meta.get("architecture") or {}):
        value = where.get("spacing") if isinstance(where, dict) else None
        if value is not None and len(value) == ndim:
            return tuple(float(v) for v in value)
    return None


def iter_segment(
    model,
    image: np.ndarray,
    *,
    metadata: dict | None = None,
    settings: PostprocessSettings | None = None,
    stack: bool = False,
    channel_axis: int | None = None,
    spacing: Sequence[float] | None = None,
    tta: bool | None = None,
    device=None,
    tile_shape: Sequence[int] | None = None,
    batch_size: int = 1,
    stitch: bool = False,
    scales: Sequence[float] | None = None,
) -> Generator[PredictProgress, None, tuple[np.ndarray, np.ndarray]]:
    """Segment a raw image (or a stack plane by plane), yielding progress events.

    Parameters
    ----------
    model : UNet
    image : ndarray
        Raw (H, W) / (H, W, C) with ``channel_axis``; with ``stack=True`` (Z, Y, X) or
        (Z, C, Y, X) (``channel_axis`` counted in the full array), predicted plane by plane
        by a 2D model; for a 3D model a (Z, Y, X) volume (channels at ``channel_axis``),
        predicted as a volume.
    metadata : dict, optional
        The model's metadata: normalisation and default post-processing.
    settings : PostprocessSettings, optional
        Default: ``PostprocessSettings.from_metadata(metadata)``.
    spacing : sequence of float, optional
        Voxel size for the post-processing of a 3D model's volume (anisotropic distances);
        default :func:`stored_spacing` of ``metadata``. Planes of a stack are post-processed
        in 2D (the last two entries, if given).
    tta : bool, optional
        Test-time augmentation: the image as it is and turned by 180°, averaged (:func:`napari_unet.core.predict.predict_tiled`);
        default :func:`~napari_unet.core.predict.postprocess.stored_tta` of ``metadata`` (what
        training chose on validation).
    device, tile_shape, batch_size
        As :func:`napari_unet.core.predict.predict_tiled`.
    scales : sequence of float, optional
        Predict the image resized by each factor and average the probabilities at the image's
        own size (the flips of ``tta`` within each scale), then post-process once
        (:mod:`napari_unet.core.predict.scales`); 2D models. Default: what the model stores
        for the kind of image (``metadata["postprocess"]["scales"]``; colour: raw channels not
        all equal, judged per plane of a stack), (1.0,) if it stores none.
    stitch : bool
        With ``stack=True``: link the planes' labels into 3D objects
        (:func:`napari_unet.core.predict.stitch.stitch_planes`) instead of one object per
        cell and plane (ids unique over the stack, :func:`number_over_planes`).

    Yields
    ------
    PredictProgress
        Per tile batch; the last event has ``result`` (float32 probabilities, (K, H, W) or
        (Z, K, H, W)) and ``labels`` (int32, (H, W) or (Z, H, W)) set, and with ``tta`` or
        several ``scales`` ``flip_std`` (how much the passes — each flip at each scale —
        disagree, per pixel; see :func:`~napari_unet.core.predict.scales.iter_predict_scales`),
        from the same forward passes.
        Returns (prob, labels).

    Examples
    --------
    >>> from napari_unet.core.model import UNet
    >>> last = list(iter_segment(UNet(depth=1, base_channels=2), np.ones((20, 30))))[-1]
    >>> last.result.shape, last.labels.shape, last.labels.dtype
    ((2, 20, 30), (20, 30), dtype('int32'))
    """
    if settings is None:
        settings = PostprocessSettings.from_metadata(metadata)
    ndim = getattr(model, "ndim", 2)
    if stack and ndim != 2:
        raise ValueError(
            f"stack: a {ndim}D model predicts a volume as a whole; call with stack=False, or "
            "use a 2D model to predict plane by plane"
        )
    if stitch and not stack:
        raise ValueError("stitch: links the planes of a stack predicted plane by plane; give "
                         "stack=True (a 2D model on a (Z, Y, X) stack) or stitch=False")
    if spacing is None and ndim == 3:
        spacing = stored_spacing(metadata, 3)
    plane_spacing = None if spacing is None or ndim == 3 else tuple(spacing)[-2:]
    if tta is None:
        tta = stored_tta(metadata)
    options = dict(metadata=metadata, channel_axis=channel_axis, tta=tta, device=device,
                   tile_shape=tile_shape, batch_size=batch_size, flip_std=True, scales=scales)
    events = (iter_predict_stack if stack else iter_predict_image)(model, image, **options)
    prob = last = None
    for event in events:
        if event.result is not None:
            prob, last = event.result, event
        else:
            yield event
    if stack:
        labels = np.stack([settings.labels(p, spacing=plane_spacing) for p in prob])
        if stitch:
            from napari_unet.core.predict.stitch import stitch_planes

            labels = stitch_planes(labels)
        else:
            labels = number_over_planes(labels)
    else:
        labels = settings.labels(prob, spacing=spacing if ndim == 3 else plane_spacing)
    yield PredictProgress(last.done, last.total, plane=last.plane, planes=last.planes,
                          result=prob, labels=labels, message="done", flip_std=last.flip_std)
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
