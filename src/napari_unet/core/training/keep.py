"""Never worse after a round: a fine-tuning keeps the better of the model it started from and
the model it trained.

Both are judged on the same held-out part of what is annotated so far (the validation band of
every pair: :func:`napari_unet.core.training.patches.split_validation`, the rule of Start's
band), each with the post-processing chosen for it on that band
(:func:`napari_unet.core.training.choice.choose_postprocess`) or, where the band holds fewer
cells than :data:`~napari_unet.core.training.choice.MIN_CHOICE_CELLS`, both with the one the
previous model stored (a previous model kept is then the model as it was). They are compared by
the choice's objective (instance F1 at IoU 0.5 minus the Rand error) or, on such a small band,
by the band's weighted loss (:data:`SMALL_BAND`). The trained model is kept unless the previous
one scores better. Where nothing can be compared (no band held out, no time left to choose),
the trained model is kept and the choice says why.

>>> keep_better({"chosen_on": {"instance_f1": 0.88, "rand_error": 0.10}},
...             {"chosen_on": {"instance_f1": 0.91, "rand_error": 0.08}}).message
'kept the previous model: validation F1 0.910 → 0.880'
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

__all__ = ["PREVIOUS", "SMALL_BAND", "TRAINED", "RoundChoice", "keep_better", "keep_or_restore"]

logger = logging.getLogger(__name__)

#: the values of :attr:`RoundChoice.kept`
TRAINED, PREVIOUS = "trained", "previous"

#: how two models are compared on a band of fewer than ``MIN_CHOICE_CELLS`` cells (both with
#: the inherited post-processing): by the weighted loss of the band's annotated pixels (lower
#: is better), not by instance F1. On 2–4 cells the F1 moves by a quarter to a half per cell:
#: over 8 Continue rounds of 8 fixed cells (``bench_budget.py``, DSB 2018, one seed) it kept
#: the previous model every time, so the unseen F1 stayed at Start's 0.898 in both strategies,
#: while the trained weights scored above Start in 8 of 8 rounds with a fixed post-processing.
#: The loss reads every annotated pixel of the band (thousands, the explicit background too).
SMALL_BAND = "loss"


@dataclasses.dataclass(frozen=True)
class RoundChoice:
    """Which model a fine-tuning run delivers, and why.

    ``kept`` is :data:`TRAINED` or :data:`PREVIOUS`; ``trained`` and ``previous`` are the
    validation scores each had with its own chosen post-processing (None: not compared);
    ``message`` is the line the Train widget and the command line show.
    """

    kept: str
    message: str
    trained: dict | None = None
    previous: dict | None = None

    @property
    def compared(self) -> bool:
        """Whether both models were scored on the band."""
        return self.trained is not None and self.previous is not None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the model metadata's ``"kept"``, the ``kept`` event's
        ``metrics``)."""
        return dataclasses.asdict(self)


def _objective(scores: dict) -> float:
    """Instance F1 minus Rand error (:func:`napari_unet.core.training.validation.objective`)."""
    return float(scores["instance_f1"]) - float(scores["rand_error"])


def _small_band(trained: dict, previous: dict) -> bool:
    """Whether both post-processings were inherited (a band too small to choose on) and the
    band's loss was scored for both."""
    return (bool(trained.get("inherited")) and bool(previous.get("inherited"))
            and SMALL_BAND in trained["chosen_on"] and SMALL_BAND in previous["chosen_on"])


def keep_better(trained: dict | None, previous: dict | None, *, reason: str = "") -> RoundChoice:
    """The model to deliver from the post-processing choices of the trained and the previous
    model on the same band (``{"chosen_on": scores, ...}``, as
    :func:`~napari_unet.core.training.choice.choose_postprocess` returns them; None where
    there was none): the previous one where it scores higher (instance F1 minus Rand error;
    where both inherited their post-processing, a band of a few cells, a lower
    :data:`SMALL_BAND` loss), else the trained one. ``reason`` says why nothing was compared.

    Examples
    --------
    >>> a = {"chosen_on": {"instance_f1": 0.9, "rand_error": 0.1}}
    >>> keep_better(a, a).kept  # a tie keeps what was trained
    'trained'
    >>> few = {"inherited": True, "chosen_on": {"instance_f1": 0.5, "rand_error": 0.1,
    ...                                         "loss": 0.20}}
    >>> keep_better(few, {**few, "chosen_on": {**few["chosen_on"], "instance_f1": 0.75,
    ...                                        "loss": 0.25}}).message
    'kept the trained model: validation loss 0.2500 → 0.2000 (a band of a few cells)'
    >>> keep_better(None, a, reason="no time left").message
    'kept the trained model: not compared with the previous one (no time left)'
    """
    if trained is None or previous is None:
        why = reason or "no validation band to score them on"
        return RoundChoice(TRAINED, f"kept the trained model: not compared with the previous "
                                    f"one ({why})")
    t, p = trained["chosen_on"], previous["chosen_on"]
    if _small_band(trained, previous):
        kept = PREVIOUS if float(p[SMALL_BAND]) < float(t[SMALL_BAND]) else TRAINED
        message = (f"kept the {kept} model: validation {SMALL_BAND} {p[SMALL_BAND]:.4f} → "
                   f"{t[SMALL_BAND]:.4f} (a band of a few cells)")
        return RoundChoice(kept, message, trained=dict(t), previous=dict(p))
    kept = PREVIOUS if _objective(p) > _objective(t) else TRAINED
    message = (f"kept the {kept} model: validation F1 {p['instance_f1']:.3f} → "
               f"{t['instance_f1']:.3f}")
    if f"{p['instance_f1']:.3f}" == f"{t['instance_f1']:.3f}":  # decided by the Rand error
        message += f", Rand error {p['rand_error']:.4f} → {t['rand_error']:.4f}"
    return RoundChoice(kept, message, trained=dict(t), previous=dict(p))


def keep_or_restore(trainer, chosen: dict | None) -> RoundChoice:
    """At the end of a fine-tuning run: choose the previous model's post-processing on the
    band the trained model's was chosen on (``chosen``, None where there was no time or no
    band), keep the better (:func:`keep_better`) and, where that is the previous model, put
    its weights and its post-processing back into ``trainer.model`` / ``trainer.postprocess``.
    The checkpoints written so far keep the trained weights."""
    previous, _ = trainer.previous
    schedule = trainer.validation
    if not (schedule is not None and schedule.enabled):
        choice = keep_better(None, None, reason="no validation band held out")
    elif chosen is None:
        choice = keep_better(None, None, reason="no annotated pixel in the validation band"
                             if schedule.choice_regions else "no time left to validate; give "
                             "a larger time limit")
    else:
        model = copy.deepcopy(previous).to(trainer.device)
        previous_chosen = schedule.choose_for(model)
        choice = keep_better(chosen, previous_chosen)
        if choice.kept == PREVIOUS:
            trainer.model.load_state_dict(model.state_dict())
            trainer.postprocess = previous_chosen
        del model
    logger.info("%s", choice.message)
    return choice
