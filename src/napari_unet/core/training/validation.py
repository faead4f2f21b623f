"""Validation during training, through the prediction users get.

The held-out regions are predicted by the same overlap-tile engine as
:func:`napari_unet.core.predict.predict_tiled` (the region is widened to the ``2**depth`` grid,
so every probability equals that of one pass over the whole image) and turned into labels by
:class:`~napari_unet.core.predict.PostprocessSettings`, so validation scores are those of
``napari-unet predict``. The post-processing is chosen on the same regions at the end of a
run (:mod:`napari_unet.core.training.choice`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from napari_unet.core.metrics import foreground_iou, instance_f1, pixel_error, rand_error
from napari_unet.core.predict.postprocess import PostprocessSettings
from napari_unet.core.predict.tiled import iter_predict_region, return_value
from napari_unet.core.predict.tiling import region_reader
from napari_unet.core.training.data import PreparedImage
from napari_unet.core.training.loss import weighted_cross_entropy
from napari_unet.core.training.patches import ValidationRegion

__all__ = ["CONTEXT", "context_region", "in_eval", "objective", "predicted_regions",
           "region_probabilities", "region_scores", "validate"]

logger = logging.getLogger(__name__)

#: context of the choice, in widths of the band (its thinnest side): ``choose_postprocess``
#: predicts and post-processes each validation region grown by this much on every side (within
#: the image) and scores the labels inside the band, so that its cells are those ``predict``
#: makes of the whole image. Without context, cells are cut at the band's edges before the
#: post-processing: a merge through a faint gap just outside the band is never seen, and the
#: minimum size and watershed act on half cells.
CONTEXT = 1.0


def _align(model) -> tuple[int, ...]:
    """Per axis, the product of the pooling factors: the shift-equivariance grid."""
    factors = getattr(model, "pool_factors", None) or ((2,) * model.ndim,) * model.depth
    return tuple(int(np.prod([f[a] for f in factors])) for a in range(model.ndim))


def region_probabilities(model, prep: PreparedImage, region, *, tile, tta: bool = False
                         ) -> np.ndarray:
    """Softmax probabilities (K, *sizes) of ``model`` (in eval mode) over a region (unpadded
    coordinates, one slice per spatial axis, 2D or 3D) of a prepared image, by the prediction
    engine: :func:`~napari_unet.core.predict.tiled.iter_predict_region` with the flat region
    ``(a0, a1, b0, b1[, c0, c1])`` and ``tile_shape`` one side per axis (``tile``: an int for a
    square / cube, or the shape). Region starts are moved down to the pooling grid first, so
    the probabilities equal those of one pass over the whole image. ``tta``: the mean over the
    test-time augmentation's passes
    (:data:`~napari_unet.core.predict.passes.TTA_TRANSFORMS`), as ``predict --tta``.

    Examples
    --------
    >>> from napari_unet.core.model import UNet
    >>> prep = PreparedImage(np.zeros((1, 44, 44), np.float32), np.zeros((44, 44), np.uint8),
    ...                      np.ones((44, 44), np.float32), 2, (40, 40),
    ...                      np.zeros((40, 40), int), np.ones((40, 40), bool))
    >>> region_probabilities(UNet(depth=1, base_channels=2).eval(), prep,
    ...                      (slice(5, 30), slice(0, 40)), tile=28).shape
    (2, 25, 40)
    """
    from napari_unet.core.training.patches import tile_per_axis

    nd, p = len(prep.shape), prep.pad
    if len(region) != nd:
        raise ValueError(f"region: expected {nd} slices (one per axis of {prep.shape}), got "
                         f"{region!r}")
    starts = [s.start // a * a for s, a in zip(region, _align(model), strict=True)]
    flat = tuple(v for s0, s in zip(starts, region, strict=True) for v in (s0, s.stop))
    read = region_reader(prep.image[(slice(None), *(slice(p, p + n) for n in prep.shape))])
    with torch.inference_mode():
        gen = iter_predict_region(model, read, flat, tile_shape=tile_per_axis(tile, nd),
                                  tta=tta)
        prob = return_value(gen)
    return prob[(slice(None), *(slice(s.start - s0, None) for s0, s in zip(starts, region,
                                                                         strict=True)))]


def context_region(region: Sequence[slice], shape: Sequence[int], context: float = CONTEXT
                   ) -> tuple[slice, ...]:
    """``region`` grown by ``context`` times its thinnest side on every side, within ``shape``.

    Examples
    --------
    >>> context_region((slice(0, 100), slice(90, 100)), (100, 100))
    (slice(0, 100, None), slice(80, 100, None))
    >>> context_region((slice(0, 100), slice(90, 100)), (100, 100), context=0)
    (slice(0, 100, None), slice(90, 100, None))
    """
    margin = math.ceil(context * min(s.stop - s.start for s in region))
    return tuple(slice(max(0, s.start - margin), min(int(n), s.stop + margin))
                 for s, n in zip(region, shape, strict=True))


def predicted_regions(model, prepared, regions, tile, tta=False, context=0.0):
    """(prob, inner, truth labels, annotated mask, target, weights, spacing) per scorable
    region: ``prob`` over the region grown by ``context`` (:func:`context_region`), ``inner``
    the region's slices in it."""
    out = []
    for reg in regions:
        prep = prepared[reg.index]
        ann = prep.annotated[reg.region]
        if not ann.any():  # nothing to score (split_validation avoids this)
            continue
        p = prep.pad
        target = prep.target[tuple(slice(s.start + p, s.stop + p) for s in reg.region)]
        grown = context_region(reg.region, prep.shape, context)
        prob = region_probabilities(model, prep, grown, tile=tile, tta=tta)
        inner = tuple(slice(s.start - g.start, s.stop - g.start)
                      for s, g in zip(reg.region, grown, strict=True))
        out.append((prob, inner, prep.labels[reg.region], ann, target, reg.weights,
                    getattr(prep, "spacing", None)))
    return out


def region_scores(rows, settings: PostprocessSettings) -> dict[str, float]:
    """Post-process each validation row with ``settings`` and score it inside its band: the mean scores by name."""
    per = []
    for prob, inner, gt, ann, target, weights, spacing in rows:
        # anisotropic watershed / regrowth with the voxel size the weights were made with;
        # post-processed with the context, scored inside the band
        pred = np.where(ann, settings.labels(prob, spacing=spacing)[inner], 0)
        prob = prob[(slice(None), *inner)]
        logp = torch.from_numpy(np.log(np.maximum(prob, 1e-8)))
        loss = float(weighted_cross_entropy(
            logp[None], torch.from_numpy(target.astype(np.int64))[None],
            torch.from_numpy(weights)[None],
        ))
        per.append((loss, foreground_iou(pred, gt), pixel_error(pred[ann], gt[ann]),
                    rand_error(pred, gt), instance_f1(pred, gt)))
    if not per:
        nan = float("nan")
        return dict.fromkeys(("loss", "iou", "pixel_error", "rand_error", "instance_f1"), nan)
    m = np.mean(np.array(per, dtype=np.float64), axis=0)
    return {"loss": float(m[0]), "iou": float(m[1]), "pixel_error": float(m[2]),
            "rand_error": float(m[3]), "instance_f1": float(m[4])}


@contextlib.contextmanager
def in_eval(model):
    """Run the block with the model in eval mode, then restore its training flag."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def validate(
    model,
    prepared: Sequence[PreparedImage],
    regions: Sequence[ValidationRegion],
    *,
    tile,
    settings: PostprocessSettings | None = None,
    timings: dict | None = None,
) -> dict[str, float]:
    """Mean weighted loss, foreground IoU, pixel error, Rand error and instance F1 over the regions.

    Predicted cells are the labels of ``settings`` (default :class:`PostprocessSettings`).
    Only annotated pixels are scored: the pixel error is the fraction of the region's
    *annotated* pixels that are wrong, and outside the annotation the prediction is set to
    background (the Rand error only counts true foreground anyway). The engine runs where
    the model is (with autocast on CUDA). ``timings``, where given, receives the seconds
    of the prediction (``"predict_s"``) and of the post-processing and scoring (``"score_s"``).
    """
    t0 = time.perf_counter()
    with in_eval(model):
        rows = predicted_regions(model, prepared, regions, tile)
    t1 = time.perf_counter()
    scores = region_scores(rows, settings or PostprocessSettings())
    if timings is not None:
        timings.update(predict_s=t1 - t0, score_s=time.perf_counter() - t1)
    return scores


def objective(scores: dict[str, float]) -> float:
    """Higher is better: instance F1 at IoU 0.5 minus the Rand error."""
    return scores["instance_f1"] - scores["rand_error"]


