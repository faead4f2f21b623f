"""The recipes the plan (:mod:`napari_unet.core.training.plan`) fills unset settings from: the
CPU recipe, the volume recipe, the learning rate by run length, the fine-tuning rate, the budget
the Train widget starts with."""

from __future__ import annotations

import dataclasses

from napari_unet.core.device import pick_device
from napari_unet.core.training.config import TrainConfig
from napari_unet.core.training.presets import get_preset

__all__ = ["CPU_RECIPE", "FINE_TUNE_LR_FACTOR", "INTERACTIVE_BUDGET", "LONG_RUN", "VOLUME_RECIPE",
           "config_for_device", "cpu_recipe_lr", "fine_tune", "interactive_budget",
           "is_long_run"]


#: Fine-tuning (the Train widget's *Continue training* and "Fine-tune from…", ``napari-unet
#: train --init``) starts from trained weights: by default at this fraction of the base rate.
#: ``bench_loop.py``: three Continues at the Start rate (2e-3) fell 0.832 → 0.751 on the
#: unseen image, at a quarter of it (5e-4) rose 0.741 → 0.811. The preset's warm-up and cosine
#: decay then run over the fine-tuning's own budget.
FINE_TUNE_LR_FACTOR = 0.25

#: (seconds, steps): a CPU-recipe run whose every budget reaches these is a *long* run, which
#: :func:`cpu_recipe_lr` gives half the rate. AdamW 2e-3 learns most in the GUI's 2-minute runs
#: (ISBI 2012, 3 minutes); in 15 minutes (10,000-14,500 steps) on DSB 2018, 1e-3 gave
#: held-out F1 0.861 / 0.857 / 0.873 against 2e-3's 0.853 / 0.843 / 0.854 with the same three
#: seeds (4e-3: 0.831 / 0.836; 5e-4: 0.850). Where between the two measured lengths the better
#: rate changes is not measured: the bounds lie between them.
LONG_RUN = (600.0, 8000)

#: the CPU recipe: on ISBI 2012 in 15 minutes it learns more than the paper's network
CPU_RECIPE = {"depth": 3, "tile": 156, "batch_size": 2, "dropout": 0.0}
#: the volume recipe: a small 3D U-Net that trains on a CPU in minutes
VOLUME_RECIPE = {"depth": 3, "dropout": 0.0, "batch_size": 2, "lr": 2e-3, "norm": "batch",
                  "pretrain_2d": 0.25}
#: the budgets the Train widget starts with: (steps, seconds) by device kind and ndim
INTERACTIVE_BUDGET = {("cpu", 2): (1500, 120.0), ("gpu", 2): (2000, 300.0),
                ("cpu", 3): (1500, 300.0), ("gpu", 3): (2000, 600.0)}


def cpu_recipe_lr(*, steps: int | None, time_limit: float | None) -> float:
    """The CPU recipe's peak learning rate for a run with these budgets (the run ends at the
    first it reaches): 1e-3 when every budget given is long (:data:`LONG_RUN`), else 2e-3.

    Examples
    --------
    >>> cpu_recipe_lr(steps=1500, time_limit=120.0)  # the GUI's Start
    0.002
    >>> cpu_recipe_lr(steps=None, time_limit=900.0)  # napari-unet train --time-limit 900
    0.001
    >>> cpu_recipe_lr(steps=20000, time_limit=300.0)  # five minutes come first
    0.002
    """
    return 1e-3 if is_long_run(steps, time_limit) else 2e-3


def is_long_run(steps: int | None, time_limit: float | None) -> bool:
    """Whether a budget counts as a long run (:data:`LONG_RUN`: both the time and the steps, where given, reach it)."""
    seconds, n = LONG_RUN
    return (time_limit is None or time_limit >= seconds) and (steps is None or steps >= n)


def fine_tune(config: TrainConfig, *, lr: float | None = None) -> TrainConfig:
    """The settings of a fine-tuning run: ``config`` with a lower learning rate.

    ``lr`` given (e.g. the command line's ``--lr``): that rate. Otherwise
    :data:`FINE_TUNE_LR_FACTOR` times the base rate (``config.lr``, else the preset's).

    >>> fine_tune(TrainConfig(lr=2e-3)).lr
    0.0005
    >>> fine_tune(TrainConfig(), lr=1e-3).lr
    0.001
    """
    if lr is None:
        base = config.lr if config.lr is not None else get_preset(config.preset).lr
        lr = base * FINE_TUNE_LR_FACTOR
    return dataclasses.replace(config, lr=float(lr))


def interactive_budget(device="auto", ndim: int = 2) -> tuple[int, float]:
    """(steps, seconds) the Train widget's form starts with for this device and ``ndim``.

    >>> interactive_budget("cpu"), interactive_budget("cpu", 3)
    ((1500, 120.0), (1500, 300.0))
    """
    kind = "cpu" if pick_device(device).type == "cpu" else "gpu"
    return INTERACTIVE_BUDGET[(kind, ndim)]


def config_for_device(device="auto", **changes) -> TrainConfig:
    """:class:`TrainConfig`'s defaults with the width for the device (the paper's 64 base
    channels on a GPU, 16 on a CPU) and ``changes``: no recipe.

    >>> config_for_device("cpu", depth=2).base_channels
    16
    """
    base = 16 if pick_device(device).type == "cpu" else 64
    return TrainConfig(**{"base_channels": base, "device": str(device), **changes})
