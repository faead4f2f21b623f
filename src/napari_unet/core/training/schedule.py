"""When a run validates, and the time it keeps for choosing the post-processing at its end.

A validation predicts the held-out regions through the prediction users get
(:func:`napari_unet.core.training.validation.validate`) every ``validate_every`` steps, when it
ends within the time budget; at the end of the run the post-processing is chosen on the same
regions (:func:`~napari_unet.core.training.choice.choose_postprocess`). That choice is
reserved in the budget from the first step on, so the run, the choice included, ends within its
time limit: from the last validation's timings, or before the first from a validation of one
region (:meth:`ValidationSchedule.estimate`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from napari_unet.core.predict.postprocess import PostprocessSettings
from napari_unet.core.training.budget import BudgetClock
from napari_unet.core.training.choice import (
    choice_cost,
    choice_regions,
    choose_postprocess,
    region_area,
)
from napari_unet.core.training.validation import validate

__all__ = ["CHOICE_SHARE", "CHOICE_SLACK", "ValidationSchedule"]

logger = logging.getLogger(__name__)

#: at most this share of a time budget is kept for choosing the post-processing at the end of
#: a run; where the choice over every validation region would take longer, it looks at an
#: evenly spread subset of them that fits (:func:`~napari_unet.core.training.validation.
#: choice_regions`). On the 80 DSB2018 training images the whole choice takes about 70 s,
#: under 10 % of 15 min.
CHOICE_SHARE = 0.25

#: a choice short of at most this share of its estimated time still looks at every region: the
#: estimate comes from one validation's timings and the last steps vary (a 3D step on 2 cores
#: takes 4–6 s), and a model left with the default post-processing costs more than the few
#: seconds over the limit. Measured: the plant-ovule tissue run (``bench_tissue.py``, one
#: validation region) ended 0.5 s short of its 6.7 s choice and kept the defaults.
CHOICE_SLACK = 0.25


class ValidationSchedule:
    """The validations of a run and the end-of-run choice of its post-processing.

    Parameters
    ----------
    model : UNet
        The network being trained (validated in eval mode).
    prepared, regions : sequences
        The prepared images and their validation regions (none: no validation).
    tile : tuple of int
        The network's input tile.
    every : int
        Steps between validations (0: none).
    budget : BudgetClock
    enabled : bool
        False on ranks other than 0 (rank 0 alone validates).
    tissue : bool
        The model learns the tissue target: validations segment with the tissue
        post-processing, and the end-of-run choice tries it
        (:func:`~napari_unet.core.training.choice.choose_postprocess`).
    compare : bool
        A fine-tuning that ends by comparing the model it started from with the one it
        trained (:mod:`napari_unet.core.training.keep`): the choice is made for both models,
        and twice its time is kept.
    inherit : dict, optional
        A fine-tuning: the stored post-processing of the model it started from, kept for
        both models where the band holds too few cells to choose on
        (:data:`~napari_unet.core.training.choice.MIN_CHOICE_CELLS`).
    """

    def __init__(self, model, prepared: Sequence, regions: Sequence, *, tile, every: int,
                 budget: BudgetClock, enabled: bool = True, tissue: bool = False,
                 compare: bool = False, inherit: dict | None = None):
        self.model, self.prepared, self.regions, self.tile = model, prepared, regions, tile
        self.every, self.budget, self.tissue = every, budget, bool(tissue)
        self.inherit = inherit
        #: the post-processing of the validations
        self.settings = PostprocessSettings(tissue=self.tissue)
        #: whether this process validates (regions held out, rank 0)
        self.enabled = bool(regions) and bool(every) and enabled
        #: (prediction passes, scorings) of the end-of-run choice (for both models where
        #: ``compare``)
        self.cost = tuple((2.0 if compare else 1.0) * c
                          for c in choice_cost(model, prepared, regions, tissue=self.tissue))
        #: the regions the end-of-run choice looked at (:meth:`choose`)
        self.choice_regions: list = []
        self.seconds = 0.0  #: the last validation's seconds (or the estimate)
        self.timings: dict = {}  #: the last validation's prediction and scoring seconds
        self.measured = False  #: whether a validation of this run timed all regions
        self.probe_s = 0.0  #: what timing one region (:meth:`estimate`) costs

    def choice_s(self) -> float:
        """Seconds of the end-of-run choice over every region (a validation's prediction per
        pass it predicts and a validation's scoring per setting it scores), from the last
        validation's timings or, before the first, the estimate of :meth:`estimate`."""
        passes, scorings = self.cost
        timings = self.timings or {"predict_s": self.seconds, "score_s": 0.0}
        return timings["predict_s"] * passes + timings["score_s"] * scorings

    def reserve(self) -> float:
        """Seconds kept for the end-of-run choice: :meth:`choice_s`, at most
        :data:`CHOICE_SHARE` of the time budget (0 without validation)."""
        if not self.enabled:
            return 0.0
        full = self.choice_s()
        limit = self.budget.time_limit
        return full if limit is None else min(full, CHOICE_SHARE * limit)

    def due(self, step: int) -> bool:
        """A validation after ``step``: every :attr:`every` steps, when it fits the budget."""
        return (self.enabled and step % self.every == 0
                and self.budget.fits(self.seconds + self.reserve()))

    def due_at_end(self, step: int) -> bool:
        """A last validation at the end of the run, unless the last step validated."""
        return (self.enabled and bool(step % self.every or not step)
                and self.budget.fits(self.seconds + self.reserve()))

    def validate(self) -> dict[str, float]:
        """Validate on every region now; the metrics (and the timings, for the budget)."""
        clock = self.budget.clock
        t0 = clock()
        self.timings = {}
        metrics = validate(self.model, self.prepared, self.regions, tile=self.tile,
                           settings=self.settings, timings=self.timings)
        self.seconds = max(clock() - t0, 0.0)
        self.measured = True
        return metrics

    def estimate(self) -> None:
        """Time a validation of the first scorable region and scale it to all regions by
        area: the estimate of a validation's (and so of the end-of-run choice's) seconds
        until the first validation measures them, so that neither starts past the budget.
        Before the first step it is an upper estimate (the untrained network's noisy
        probabilities are several times slower to post-process); a run that ends without a
        validation times it again with the trained network before the choice, which then
        looks at as many regions as truly fit."""
        prepared, regions = self.prepared, self.regions
        probe = next((r for r in regions if prepared[r.index].annotated[r.region].any()), None)
        if probe is None:
            return
        timings: dict = {}
        clock = self.budget.clock
        t0 = clock()
        validate(self.model, prepared, [probe], tile=self.tile, settings=self.settings,
                 timings=timings)
        scale = sum(region_area(r.region) for r in regions) / max(region_area(probe.region), 1)
        self.probe_s = max(clock() - t0, 0.0)  # what timing it again costs
        self.seconds = self.probe_s * scale
        self.timings = {k: v * scale for k, v in timings.items()}
        logger.debug("a validation will take at most about %.1f s, choosing the "
                     "post-processing %.1f s (estimated on 1 of %d validation regions)",
                     self.seconds, self.choice_s(), len(regions))

    def chosen_regions(self) -> list:
        """The regions the end-of-run choice looks at: all of them where the time left allows
        (or falls short by at most :data:`CHOICE_SLACK` of the choice's time), else an evenly
        spread subset that fits in it (none where not even one region fits:
        the default post-processing stays)."""
        full = self.choice_s()
        if self.budget.time_limit is None or full <= 0:
            return list(self.regions)
        left = max(self.budget.time_limit - self.budget.tick(), 0.0)
        share = 1.0 if left >= (1.0 - CHOICE_SLACK) * full else left / full
        chosen = choice_regions(self.prepared, self.regions, share=share)
        if len(chosen) < len(self.regions):
            logger.info("time limit: %.1f s left for choosing the post-processing, which takes "
                        "about %.1f s over all %d validation regions: choosing on %d of them",
                        left, full, len(self.regions), len(chosen))
        return chosen

    def choose(self) -> dict | None:
        """The post-processing chosen on the regions at the end of the run (the model's
        metadata ``"postprocess"``), or None where the time limit left no time for it."""
        if not self.measured and self.budget.time_limit is not None and self.budget.fits(
                self.probe_s):
            self.estimate()
        chosen = self.choice_regions = self.chosen_regions()
        if not chosen:
            logger.warning("the time limit left no time to choose the post-processing on the "
                           "validation band; the model keeps the defaults (give a larger "
                           "--time-limit)")
            return None
        return choose_postprocess(self.model, self.prepared, chosen, tile=self.tile,
                                  tissue=self.tissue, inherit=self.inherit)

    def choose_for(self, model) -> dict | None:
        """The post-processing of another ``model`` (the one a fine-tuning started from),
        chosen on the regions :meth:`choose` looked at: the two choices' scores compare."""
        if not self.choice_regions:
            return None
        return choose_postprocess(model, self.prepared, self.choice_regions, tile=self.tile,
                                  tissue=self.tissue, inherit=self.inherit)
