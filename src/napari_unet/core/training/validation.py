"""Validation during training, through the prediction users get, and the post-processing
chosen on the validation band at the end of training.

The held-out regions are predicted by the same overlap-tile engine as
:func:`napari_unet.core.predict.predict_tiled` (the region is widened to the ``2**depth`` grid,
so every probability equals that of one pass over the whole image) and turned into labels by
:class:`~napari_unet.core.predict.PostprocessSettings`, so validation scores are those of
``napari-unet predict``. :func:`choose_postprocess` picks the threshold, watershed, minimum size
and regrowth that score best there, and whether averaging the image as it is and turned by
180° (test-time augmentation) is worth its cost; the Trainer stores them in the model's metadata
(``"postprocess"``), which prediction, the GUI and exports use by default.
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
from napari_unet.core.predict.passes import TTA_TRANSFORMS
from napari_unet.core.predict.postprocess import PostprocessSettings
from napari_unet.core.predict.tiled import iter_predict_region, return_value
from napari_unet.core.predict.tiling import region_reader
from napari_unet.core.training.data import PreparedImage
from napari_unet.core.training.loss import weighted_cross_entropy
from napari_unet.core.training.patches import ValidationRegion

__all__ = [
    "CONTEXT",
    "choice_cost",
    "choice_regions",
    "choose_postprocess",
    "choose_settings",
    "context_region",
    "in_eval",
    "objective",
    "predicted_regions",
    "region_area",
    "region_probabilities",
    "region_scores",
    "seed_level",
    "validate",
]

logger = logging.getLogger(__name__)

#: candidates tried by :func:`choose_postprocess`, one setting after the other. The thresholds
#: start at the network's own decision boundary (0.5) and only go up: below it, pixels the
#: network thinks more likely background join cells, which makes cells larger (what instance F1
#: on a validation band rewards) and merges touching cells through their faintest gaps (what a
#: band cannot show: the two cells of a merge are rarely both inside it). Measured on ISBI 2012:
#: every validation band preferred 0.3, which gave the held-out slices Rand error 0.137 against
#: 0.059 at 0.5. Going up only shrinks cells, which the band does measure (and the regrowth
#: gives back between touching cells).
THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
#: the confident-core level (``PostprocessSettings.seeds``) of a chosen threshold: this much
#: above it, at most :data:`SEEDS_MAX`. Not chosen on the validation regions: what the cores
#: guard against, merges through faint bridges between cells larger than a band and blobs
#: the network is unsure of everywhere, happens on images it was not trained on, not in a
#: band whose surroundings it was (there the cores only split a few cells). On held-out
#: images, the same models with and without them: ISBI 2012 Rand error 0.058 -> 0.039 and
#: 0.058 -> 0.028, DSB 2018 F1 0.855 -> 0.870 (shipped model), 0.850 -> 0.850 (15 minutes), a
#: few painted cells 0.904 -> 0.912 (BENCHMARKS.md, eighth session)
SEED_MARGIN = 0.2
SEEDS_MAX = 0.9
#: the cores are kept unless the validation regions score higher without them by more than
#: this (instance F1 minus Rand error). Bands scored 0.00-0.05 lower with cores for models
#: the cores helped on held-out images; a model whose cells have no confident core (a short
#: training, a hard image) loses most of its cells to them, far more than this.
CORES_LOSS = 0.1
MIN_SIZES = (0, 10, 25, 50)
REGROW = (0, 1, 2)
#: a threshold above another is kept only where the validation regions score it higher by
#: more than this (instance F1 minus Rand error). A band is held out of the loss, but the
#: network has trained on the rest of its image, so its probabilities there are crisper than
#: on an image it has never seen, and a higher threshold loses less there. Over 11 DSB 2018
#: models of 15 minutes the bands scored 0.5 -> 0.6 from +0.007 to +0.056, while on their
#: held-out images it changed F1 by -0.012 to +0.005 (BENCHMARKS.md, eleventh session). With
#: this tolerance, on the same band probabilities of 16 such models, the held-out F1 went
#: from 0.849 to 0.851 on average (6 models changed: -0.011 to +0.020; thirteenth session).
#: ISBI 2012's bands chose 0.5 in every run since the cores, which this cannot change.
THRESHOLD_TOLERANCE = 0.01
# Test-time augmentation: 2D models always ask for it (the image as it is and turned by 180°,
# :data:`TTA_TRANSFORMS`), and their post-processing is chosen on those probabilities. On
# held-out images the 8 flips/rotations (the set measured then) helped 10 of
# the 13 models we measured (ISBI 2012 Rand error 0.045 -> 0.038, 0.062 -> 0.025, 0.087 ->
# 0.029, 0.070 -> 0.039, 0.047 -> 0.028, 0.048 -> 0.030; DSB 2018 F1 0.842 -> 0.851, 0.862 ->
# 0.870, 0.841 -> 0.857, 0.849 -> 0.853) and cost little where they did not (0.850 -> 0.845;
# a few painted cells 0.895 -> 0.893 and 0.909 -> 0.908), while the validation band, which
# cannot see the merges they prevent, judged them from +0.013 to -0.023 with no relation to
# the held-out effect (it turned down the 0.048 -> 0.030 model). ``predict --no-tta`` and the
# Predict widget's box give one pass, 8x faster (BENCHMARKS.md, seventh to ninth sessions).

#: context of the choice, in widths of the band (its thinnest side): :func:`choose_postprocess`
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
    test-time augmentation's passes (:data:`TTA_TRANSFORMS`), as ``predict --tta``.

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
    device=None,
    amp=None,
    timings: dict | None = None,
) -> dict[str, float]:
    """Mean weighted loss, foreground IoU, pixel error, Rand error and instance F1 over the regions.

    Predicted cells are the labels of ``settings`` (default :class:`PostprocessSettings`).
    Only annotated pixels are scored: the pixel error is the fraction of the region's
    *annotated* pixels that are wrong, and outside the annotation the prediction is set to
    background (the Rand error only counts true foreground anyway). The engine runs where
    the model is (with autocast on CUDA); ``device`` and ``amp`` are accepted from callers of
    the former validator and have no effect. ``timings``, where given, receives the seconds
    of the prediction (``"predict_s"``) and of the post-processing and scoring (``"score_s"``).
    """
    del device, amp
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


def seed_level(threshold: float) -> float:
    """The confident-core level that goes with ``threshold`` (:data:`SEED_MARGIN` above it,
    at most :data:`SEEDS_MAX`).

    Examples
    --------
    >>> seed_level(0.5), seed_level(0.8)
    (0.7, 0.9)
    """
    return round(min(float(threshold) + SEED_MARGIN, SEEDS_MAX), 6)


def _search(rows, *, cores: bool = True) -> tuple[PostprocessSettings, dict[str, float]]:
    """Threshold (with its :func:`seed_level` where ``cores``, else none), watershed, minimum
    size and regrowth, one after the other (each keeping the best of the previous),
    maximising :func:`objective`; then the lowest threshold within
    :data:`THRESHOLD_TOLERANCE` of the best, the others kept (the band favours higher
    thresholds than new images do, and the threshold was first tried at the default minimum
    size, where a higher one also drops small false blobs that the chosen size drops anyway).
    Each setting is scored once."""
    def level(t):
        return seed_level(t) if cores else 0.0

    scored: dict[PostprocessSettings, dict[str, float]] = {}

    def score_of(settings: PostprocessSettings) -> float:
        if settings not in scored:
            scored[settings] = region_scores(rows, settings)
        return objective(scored[settings])

    best = PostprocessSettings(threshold=THRESHOLDS[0], seeds=level(THRESHOLDS[0]))
    for name, values in (("threshold", THRESHOLDS), ("watershed", (False, True)),
                         ("min_size", MIN_SIZES), ("regrow", REGROW)):
        for value in values:
            trial = best.replace(**{name: value})
            if name == "threshold":
                trial = trial.replace(seeds=level(value))
            if trial != best and score_of(trial) > score_of(best) + 1e-9:
                best = trial
    top = score_of(best)
    for value in THRESHOLDS:
        if value >= best.threshold:
            break
        trial = best.replace(threshold=value, seeds=level(value))
        if score_of(trial) >= top - THRESHOLD_TOLERANCE:
            best = trial
            break
    return best, scored[best]


def choose_settings(rows, *, cores: bool = True) -> tuple[PostprocessSettings, dict[str, float]]:
    """:func:`_search` with the confident cores (where ``cores``), unless without them it
    scores higher by more than :data:`CORES_LOSS` (a model unsure of its cells everywhere,
    whose cores would drop them)."""
    off, score_off = _search(rows, cores=False)
    if not cores:
        return off, score_off
    best, score = _search(rows)
    logger.info("validation objective (F1 - Rand error): %.4f with confident cores, %.4f "
                "without", objective(score), objective(score_off))
    if objective(score_off) > objective(score) + CORES_LOSS + 1e-9:
        return off, score_off
    return best, score


def _is_2d(model) -> bool:
    """Whether :func:`choose_postprocess` tries test-time augmentation by default, and gives
    the model confident cores: 2D models (where both were measured; a 3D U-Net keeps one
    pass and the components of its threshold)."""
    return getattr(model, "ndim", 2) == 2


def choice_cost(model, prepared: Sequence[PreparedImage] = (),
                regions: Sequence[ValidationRegion] = ()) -> tuple[float, float]:
    """What :func:`choose_postprocess` does by default, in units of one validation: (its
    predictions, its post-processings and scorings). Predictions: one per flip/rotation for
    a 2D model, one pass for a 3D one; scorings: at most one per candidate setting of a
    search, for a 2D model a search with and one without the confident cores. Both over
    the regions grown by their :data:`CONTEXT` (by the ratio of the areas where
    ``prepared`` and ``regions`` are given). The Trainer keeps that much time for it at the
    end of a run.

    Examples
    --------
    >>> from napari_unet.core.model import UNet
    >>> choice_cost(UNet(depth=1, base_channels=2))
    (2.0, 38.0)
    """
    two_d = _is_2d(model)
    passes = len(TTA_TRANSFORMS) if two_d else 1
    # at most: each candidate (each start skipped), then the thresholds below the chosen one
    trials = 1 + len(THRESHOLDS) + 2 + len(MIN_SIZES) + len(REGROW) - 4 + len(THRESHOLDS) - 1
    searches = 2 if two_d else 1  # with and without the confident cores
    band = grown = 0
    for reg in regions:
        shape = prepared[reg.index].shape
        band += region_area(reg.region)
        grown += region_area(context_region(reg.region, shape))
    ratio = grown / band if band else 1.0
    return float(passes * ratio), float(trials * searches * ratio)


def region_area(region: Sequence[slice]) -> int:
    """Pixels (voxels) of a box given as one slice per axis.

    >>> region_area((slice(2, 5), slice(0, 10)))
    30
    """
    return math.prod(s.stop - s.start for s in region)


def choice_regions(prepared: Sequence[PreparedImage], regions: Sequence[ValidationRegion], *,
                   share: float) -> list[ValidationRegion]:
    """As many regions as fit, spread evenly over ``regions`` (from the first to the last),
    whose area grown by :data:`CONTEXT` is at most ``share`` of all of theirs: what
    :func:`choose_postprocess` can look at in ``share`` of its full time. All of them for
    ``share`` ≥ 1; none where even one region is more. The count is found by bisection: it
    fits and one more evenly spread region would not (milliseconds for thousands of
    regions).

    Examples
    --------
    >>> prep = PreparedImage(np.zeros((1, 40, 40), np.float32), np.zeros((40, 40), np.uint8),
    ...                      np.ones((40, 40), np.float32), 0, (40, 40),
    ...                      np.zeros((40, 40), int), np.ones((40, 40), bool))
    >>> bands = [ValidationRegion(0, (slice(i, i + 4), slice(0, 40))) for i in range(0, 40, 4)]
    >>> [r.region[0].start for r in choice_regions([prep], bands, share=0.35)]
    [0, 16, 36]
    >>> len(choice_regions([prep], bands, share=1.0)), choice_regions([prep], bands, share=0.0)
    (10, [])
    """
    regions = list(regions)
    if share >= 1.0 or not regions:
        return regions
    grown = np.array([region_area(context_region(r.region, prepared[r.index].shape))
                      for r in regions], dtype=np.float64)
    limit = share * grown.sum()

    def spread(k: int) -> np.ndarray:
        return np.unique(np.round(np.linspace(0, len(regions) - 1, k)).astype(int))

    # the largest k whose spread fits, by bisection (k regions cover at least k times the
    # smallest, which bounds it): lo fits, hi does not
    lo, hi = 0, min(len(regions) - 1, int(limit // max(grown.min(), 1.0))) + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if grown[spread(mid)].sum() <= limit:
            lo = mid
        else:
            hi = mid
    return [regions[i] for i in spread(lo)] if lo else []


def choose_postprocess(
    model, prepared: Sequence[PreparedImage], regions: Sequence[ValidationRegion], *, tile,
    tta: bool | None = None, context: float = CONTEXT,
) -> dict | None:
    """The post-processing that scores best on the validation regions, as a metadata dict.

    The regions, each grown by ``context`` band widths (:func:`context_region`: the
    post-processing sees the cells around the band, as on the whole image), are predicted
    once; then threshold (from :data:`THRESHOLDS`: 0.5 and above, with the confident-core
    level :func:`seed_level` above it for 2D models, unless the cores cost more than
    :data:`CORES_LOSS`), watershed, minimum size and regrowth are chosen one after the other
    (each keeping the best of the previous), maximising instance F1 minus Rand error; then
    the lowest threshold within :data:`THRESHOLD_TOLERANCE` of the best is taken, the other
    choices kept. With ``tta`` (default: for 2D models) the regions are predicted with the
    test-time augmentation's passes averaged, the search runs on those probabilities and ``"tta"`` is True,
    so that prediction averages them too (:func:`napari_unet.core.predict.postprocess.stored_tta`);
    the band is not asked whether they help (it cannot see the merges they prevent).
    Returns ``PostprocessSettings.to_dict()`` plus ``"tta"`` and ``"chosen_on"`` (the
    scores), or None without scorable regions.
    """
    tta = _is_2d(model) if tta is None else bool(tta)
    with in_eval(model):
        rows = predicted_regions(model, prepared, regions, tile, tta=tta, context=context)
    if not rows:
        return None
    best, best_score = choose_settings(rows, cores=_is_2d(model))
    logger.info("post-processing chosen on validation: %s, tta=%s (F1 %.3f, Rand error %.4f)",
                best, tta, best_score["instance_f1"], best_score["rand_error"])
    return {**best.to_dict(), "tta": tta,
            "chosen_on": {k: round(v, 5) for k, v in best_score.items()}}
