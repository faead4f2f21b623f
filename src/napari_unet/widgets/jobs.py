"""Work run in napari worker threads by the Train and Predict widgets (no Qt here).

Each function is a plain function or generator over :mod:`napari_unet.core`; the widgets wrap
them with ``napari.qt.threading.create_worker``.
"""

from __future__ import annotations

import logging
import os

import numpy as np

logger = logging.getLogger(__name__)


def background_threads() -> int:
    """Torch CPU threads for work beside the GUI: every usable core but one (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def augmentation_samples(image, labels, config, *, n: int = 8, seed: int = 0, side: int = 256):
    """``n`` augmented versions of (a centre crop of) one image/labels pair, as stacks.

    Returns (float32 images (n, h, w), int32 labels (n, h, w)).
    """
    import torch

    from napari_unet.core.augment.pipeline import Augmenter
    from napari_unet.core.normalize import normalize

    image = normalize(np.asarray(image, dtype=np.float32))
    labels = np.asarray(labels)
    h, w = labels.shape[-2:]
    r0, c0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    image = image[r0 : r0 + side, c0 : c0 + side]
    labels = labels[r0 : r0 + side, c0 : c0 + side]
    x = torch.from_numpy(np.ascontiguousarray(image)).expand(n, 1, *image.shape).contiguous()
    y = torch.from_numpy(labels.astype(np.int64)).expand(n, *labels.shape).contiguous()
    out_image, out_labels = Augmenter(config, seed=seed)(x, y)[:2]
    return out_image[:, 0].numpy().astype(np.float32), out_labels.numpy().astype(np.int32)


def iter_prediction(model, metadata, image, *, tta: bool, stack: bool, channel_axis=None,
                    settings=None, truth=None, spacing=None, stitch: bool = False,
                    geometry=None):
    """Yield core prediction progress, then one :class:`PredictionResult` (all in the worker).

    :func:`napari_unet.core.predict.iter_segment` does the work (``settings``: the widget's
    post-processing); the cells' table (:func:`napari_unet.core.measure.measure_cells` with
    the model's confidence, ``geometry``: the layer's spacing, origin and unit) and, with
    ``truth``, the comparison and scores are computed here too, so that the GUI thread only
    shows layers. ``spacing``: a 3D model's voxel size for the post-processing (None: the one
    stored with the model); ``stitch``: link a stack's planes into 3D objects.
    """
    from napari_unet.core.measure import confidence_maps, measure_cells
    from napari_unet.core.metrics import compare_instances
    from napari_unet.core.predict.segment import iter_segment
    from napari_unet.core.review import review_table

    event = None
    extra = {} if spacing is None else {"spacing": spacing}
    for event in iter_segment(model, image, metadata=metadata, settings=settings, stack=stack,
                              channel_axis=channel_axis, tta=tta, stitch=stitch, **extra):
        yield event
    if event is None or event.labels is None:
        return
    prob, labels = event.result, event.labels
    maps = confidence_maps(prob, flip_std=event.flip_std, stacked=stack)
    table = measure_cells(labels, image, maps=maps, planes=stack and not stitch,
                          channel_axis=channel_axis, **(geometry or {}))
    review = review_table(table, labels, maps["mean_probability"], planes=stack and not stitch)
    comparison = scores = None
    if truth is not None:
        comparison, scores = compare_instances(labels, truth)
    yield PredictionResult(prob, labels, comparison, scores, table=table, maps=maps,
                           review=review)


class PredictionResult:
    """What the Predict worker hands to the GUI: probabilities, labels, comparison, scores,
    the cells' table and the confidence maps it was measured with, the ranked cells to check
    (:func:`napari_unet.core.review.review_table`)."""

    def __init__(self, prob, labels, comparison=None, scores=None, *, table=None, maps=None,
                 review=None):
        self.prob, self.labels, self.comparison, self.scores = prob, labels, comparison, scores
        self.table, self.maps, self.review = table, maps, review
