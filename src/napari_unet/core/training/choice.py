"""The post-processing chosen on the validation band at the end of training: the threshold,
watershed, minimum size and regrowth that score best there (instance F1 minus Rand error),
whether to split at confident cores, for a model trained on a tissue whether its cells fill the
space (the tissue's seeded watershed, at which seed level), and whether averaging the image as
it is and turned by 180° (test-time augmentation) is worth its cost. The Trainer stores the
choice in the model's metadata (``"postprocess"``), which prediction, the GUI and exports use
by default."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from napari_unet.core.predict.passes import TTA_TRANSFORMS
from napari_unet.core.predict.postprocess import PostprocessSettings
from napari_unet.core.training.data import PreparedImage
from napari_unet.core.training.patches import ValidationRegion
from napari_unet.core.training.validation import (
    CONTEXT,
    context_region,
    in_eval,
    objective,
    predicted_regions,
    region_scores,
)

__all__ = ["CORES_LOSS", "MIN_CHOICE_CELLS", "MIN_SIZES", "REGROW", "SEEDS_MAX", "SEED_MARGIN",
           "THRESHOLDS", "THRESHOLD_TOLERANCE", "TISSUE_SEEDS", "band_cells", "choice_cost",
           "choice_regions",
           "choose_postprocess", "choose_settings", "region_area", "seed_level"]

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
#: few painted cells 0.904 -> 0.912
SEED_MARGIN = 0.2
SEEDS_MAX = 0.9
#: the cores are kept unless the validation regions score higher without them by more than
#: this (instance F1 minus Rand error). Bands scored 0.00-0.05 lower with cores for models
#: the cores helped on held-out images; a model whose cells have no confident core (a short
#: training, a hard image) loses most of its cells to them, far more than this.
CORES_LOSS = 0.1
MIN_SIZES = (0, 10, 25, 50)

#: a fine-tuning whose validation band holds fewer true cells than this keeps the
#: post-processing of the model it started from instead of choosing again: on a few cells a
#: band's F1 moves by a sixth per cell, and what it picks does not hold elsewhere. Measured
#: (``bench_budget.py``, Continue rounds of 8 fixed cells on DSB 2018): bands of 2–6 cells
#: chose threshold 0.7 with cores at 0.9 or a minimum size of 50, and the F1 on unseen images
#: fell from 0.926 to 0.354 in one round (and from 0.897 to 0.646 with the previous model
#: kept, its post-processing chosen again).
MIN_CHOICE_CELLS = 20
REGROW = (0, 1, 2)
#: the seed levels (``PostprocessSettings.seeds``) tried for a model trained on a tissue, whose
#: cells fill the space (``tissue=True``): the confident interiors that start its cells. A low
#: level joins two cells through a faint wall, a high one loses the cells whose interior is
#: never confident (their space goes to the neighbours).
TISSUE_SEEDS = (0.5, 0.6, 0.7, 0.8, 0.9)
#: a threshold above another is kept only where the validation regions score it higher by
#: more than this (instance F1 minus Rand error). A band is held out of the loss, but the
#: network has trained on the rest of its image, so its probabilities there are crisper than
#: on an image it has never seen, and a higher threshold loses less there. Over 11 DSB 2018
#: models of 15 minutes the bands scored 0.5 -> 0.6 from +0.007 to +0.056, while on their
#: held-out images it changed F1 by -0.012 to +0.005. With
#: this tolerance, on the same band probabilities of 16 such models, the held-out F1 went
#: from 0.849 to 0.851 on average (6 models changed: -0.011 to +0.020). ISBI 2012's bands
#: choose 0.5 with the confident cores, which this cannot change.
THRESHOLD_TOLERANCE = 0.01
# Test-time augmentation: 2D models always ask for it (the image as it is and turned by 180°,
# :data:`~napari_unet.core.predict.passes.TTA_TRANSFORMS`), and their post-processing is chosen
# on those probabilities. On held-out images the 8 flips/rotations (the set measured then)
# helped 10 of
# the 13 models we measured (ISBI 2012 Rand error 0.045 -> 0.038, 0.062 -> 0.025, 0.087 ->
# 0.029, 0.070 -> 0.039, 0.047 -> 0.028, 0.048 -> 0.030; DSB 2018 F1 0.842 -> 0.851, 0.862 ->
# 0.870, 0.841 -> 0.857, 0.849 -> 0.853) and cost little where they did not (0.850 -> 0.845;
# a few painted cells 0.895 -> 0.893 and 0.909 -> 0.908), while the validation band, which
# cannot see the merges they prevent, judged them from +0.013 to -0.023 with no relation to
# the held-out effect (it turned down the 0.048 -> 0.030 model). ``predict --no-tta`` and the
# Predict widget's box give one pass instead of two.

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

    def with_seeds(trial: PostprocessSettings) -> PostprocessSettings:
        return trial.replace(seeds=level(trial.threshold))

    score_of, scored = _scorer(rows)
    best = _one_after_the_other(
        PostprocessSettings(threshold=THRESHOLDS[0], seeds=level(THRESHOLDS[0])),
        (("threshold", THRESHOLDS), ("watershed", (False, True)), ("min_size", MIN_SIZES),
         ("regrow", REGROW)),
        score_of, adjust={"threshold": with_seeds},
    )
    top = score_of(best)
    for value in THRESHOLDS:
        if value >= best.threshold:
            break
        trial = best.replace(threshold=value, seeds=level(value))
        if score_of(trial) >= top - THRESHOLD_TOLERANCE:
            best = trial
            break
    return best, scored[best]


def _tissue_search(rows) -> tuple[PostprocessSettings, dict[str, float]]:
    """The tissue's seeded watershed (``tissue=True``): the seed level (from
    :data:`TISSUE_SEEDS`), the threshold of the tissue (from :data:`THRESHOLDS`) and the
    minimum size, one after the other, maximising :func:`objective`."""
    score_of, scored = _scorer(rows)
    best = _one_after_the_other(
        PostprocessSettings(tissue=True, threshold=THRESHOLDS[0], seeds=TISSUE_SEEDS[0]),
        (("seeds", TISSUE_SEEDS), ("threshold", THRESHOLDS), ("min_size", MIN_SIZES)),
        score_of,
    )
    score_of(best)
    return best, scored[best]


def _scorer(rows):
    """``(score_of, scored)``: :func:`objective` of a setting on the regions' ``rows``, each
    setting scored once (its :func:`region_scores` kept in ``scored``)."""
    scored: dict[PostprocessSettings, dict[str, float]] = {}

    def score_of(settings: PostprocessSettings) -> float:
        if settings not in scored:
            scored[settings] = region_scores(rows, settings)
        return objective(scored[settings])

    return score_of, scored


def _one_after_the_other(best: PostprocessSettings, steps, score_of, *, adjust=None
                         ) -> PostprocessSettings:
    """For each ``(name, values)`` of ``steps`` in turn, the value of that setting that scores
    highest, the others kept from the steps before (a tie keeps the earlier one);
    ``adjust[name]`` maps each trial of that setting (the seeds that go with a threshold)."""
    adjust = adjust or {}
    for name, values in steps:
        for value in values:
            trial = best.replace(**{name: value})
            if name in adjust:
                trial = adjust[name](trial)
            if trial != best and score_of(trial) > score_of(best) + 1e-9:
                best = trial
    return best


def choose_settings(rows, *, cores: bool = True, tissue: bool = False
                    ) -> tuple[PostprocessSettings, dict[str, float]]:
    """:func:`_search` with the confident cores (where ``cores``), unless without them it
    scores higher by more than :data:`CORES_LOSS` (a model unsure of its cells everywhere,
    whose cores would drop them); with ``tissue`` (a model trained on a tissue) the tissue's
    seeded watershed (:func:`_tissue_search`) unless those score higher."""
    best, score = _objects_choice(rows, cores=cores)
    if not tissue:
        return best, score
    filled, score_filled = _tissue_search(rows)
    logger.info("validation objective (F1 - Rand error): %.4f with the cells filling the "
                "tissue, %.4f without", objective(score_filled), objective(score))
    if objective(score_filled) >= objective(score) - 1e-9:
        return filled, score_filled
    return best, score


def _objects_choice(rows, *, cores: bool) -> tuple[PostprocessSettings, dict[str, float]]:
    """The search with and without the confident cores (:func:`choose_settings`)."""
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
                regions: Sequence[ValidationRegion] = (), *, tissue: bool = False
                ) -> tuple[float, float]:
    """What :func:`choose_postprocess` does by default, in units of one validation: (its
    predictions, its post-processings and scorings). Predictions: one per flip/rotation for
    a 2D model, one pass for a 3D one; scorings: at most one per candidate setting of a
    search, for a 2D model a search with and one without the confident cores, and with
    ``tissue`` the search of the tissue's seeded watershed. Both over
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
    filled = len(TISSUE_SEEDS) + len(THRESHOLDS) + len(MIN_SIZES) - 2 if tissue else 0
    band = grown = 0
    for reg in regions:
        shape = prepared[reg.index].shape
        band += region_area(reg.region)
        grown += region_area(context_region(reg.region, shape))
    ratio = grown / band if band else 1.0
    return float(passes * ratio), float((trials * searches + filled) * ratio)


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
    tta: bool | None = None, context: float = CONTEXT, tissue: bool = False,
    inherit: dict | None = None,
) -> dict | None:
    """The post-processing that scores best on the validation regions, as a metadata dict.

    The regions, each grown by ``context`` band widths (:func:`context_region`: the
    post-processing sees the cells around the band, as on the whole image), are predicted
    once; then threshold (from :data:`THRESHOLDS`: 0.5 and above, with the confident-core
    level :func:`seed_level` above it for 2D models, unless the cores cost more than
    :data:`CORES_LOSS`), watershed, minimum size and regrowth are chosen one after the other
    (each keeping the best of the previous), maximising instance F1 minus Rand error; then
    the lowest threshold within :data:`THRESHOLD_TOLERANCE` of the best is taken, the other
    choices kept. With ``tissue`` (a model trained on a tissue) the tissue's seeded watershed
    is searched too (:data:`TISSUE_SEEDS`, thresholds, minimum size) and kept unless the
    other settings score higher. With ``tta`` (default: for 2D models) the regions are
    predicted with the test-time augmentation's passes averaged, the search runs on those
    probabilities and ``"tta"`` is True, so that prediction averages them too
    (:func:`napari_unet.core.predict.postprocess.stored_tta`); the band is not asked whether
    they help (it cannot see the merges they prevent). ``inherit`` (a fine-tuning: the stored
    post-processing of the model it started from) is kept as it is, only scored, where the
    regions hold fewer than :data:`MIN_CHOICE_CELLS` true cells (``"inherited"`` is then
    True). Returns ``PostprocessSettings.to_dict()`` plus ``"tta"`` and ``"chosen_on"`` (the
    scores), or None without scorable regions.
    """
    cells = band_cells(prepared, regions)
    inheriting = inherit is not None and cells < MIN_CHOICE_CELLS
    tta = _is_2d(model) if tta is None else bool(tta)
    if inheriting:
        tta = bool(inherit.get("tta", tta))
    with in_eval(model):
        rows = predicted_regions(model, prepared, regions, tile, tta=tta, context=context)
    if not rows:
        return None
    if inheriting:
        kept = PostprocessSettings.from_metadata({"postprocess": inherit}, tissue=tissue or None)
        score = region_scores(rows, kept)
        logger.info("post-processing of the model fine-tuned kept (%d cells in the validation "
                    "band, fewer than %d to choose on): %s", cells, MIN_CHOICE_CELLS, kept)
        return {**kept.to_dict(), "tta": tta, "inherited": True,
                "chosen_on": {k: round(v, 5) for k, v in score.items()}}
    best, best_score = choose_settings(rows, cores=_is_2d(model), tissue=tissue)
    logger.info("post-processing chosen on validation: %s, tta=%s (F1 %.3f, Rand error %.4f)",
                best, tta, best_score["instance_f1"], best_score["rand_error"])
    return {**best.to_dict(), "tta": tta,
            "chosen_on": {k: round(v, 5) for k, v in best_score.items()}}


def band_cells(prepared: Sequence[PreparedImage], regions: Sequence[ValidationRegion]) -> int:
    """The true cells inside the validation ``regions``: each region's distinct labels under
    its annotated pixels.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2], [0, 0, 0, 2]], np.int32)
    >>> prep = PreparedImage(np.zeros((1, 2, 4), np.float32), np.zeros((2, 4), np.uint8),
    ...                      np.ones((2, 4), np.float32), 0, (2, 4), gt, gt > 0)
    >>> band_cells([prep], [ValidationRegion(0, (slice(0, 2), slice(0, 2)), None),
    ...                     ValidationRegion(0, (slice(0, 2), slice(0, 4)), None)])
    3
    """
    total = 0
    for r in regions:
        prep = prepared[r.index]
        gt, ann = prep.labels[r.region], prep.annotated[r.region]
        total += np.unique(gt[ann & (gt > 0)]).size
    return int(total)
