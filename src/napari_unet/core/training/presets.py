"""Optimisation presets: ``"paper"`` (SGD, momentum 0.99) and the faster default ``"adamw"``.

The learning rate follows a schedule of the run's *progress* (0 → 1, the larger of steps done /
step budget and time used / time budget), so it also works with a wall-time budget alone.
"""

from __future__ import annotations

import dataclasses
import math

import torch

__all__ = ["PRESETS", "Preset", "lr_factor", "make_optimizer"]


@dataclasses.dataclass(frozen=True)
class Preset:
    """Optimiser, learning rate, schedule and batch of one preset."""

    optimizer: str  # "adamw" | "sgd"
    lr: float
    batch_size: int
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup: float = 0.0  # fraction of the run with a linear warm-up
    schedule: str = "constant"  # "constant" | "cosine"


#: The presets. "paper": SGD with momentum 0.99 and a batch of one large tile, as in
#: Ronneberger et al. (2015); the loss here is a weighted *mean* (not Caffe's sum), and lr 1e-3
#: was measured to train on ISBI 2012 where 1e-2 collapsed to one class. "adamw": AdamW with
#: warm-up and cosine decay, the default: lower ISBI validation Rand error within the same CPU
#: time (ISBI 2012, 15 minutes on a CPU).
PRESETS: dict[str, Preset] = {
    "adamw": Preset("adamw", lr=1e-3, batch_size=1, weight_decay=1e-4, warmup=0.03,
                    schedule="cosine"),
    "paper": Preset("sgd", lr=1e-3, batch_size=1, momentum=0.99),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ValueError listing the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}") from None


def make_optimizer(preset: Preset, params, *, lr: float) -> torch.optim.Optimizer:
    """The preset's optimiser over ``params`` with base learning rate ``lr``."""
    if preset.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=preset.weight_decay)
    if preset.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=preset.momentum, weight_decay=preset.weight_decay
        )
    raise ValueError(f"optimizer: expected 'adamw' or 'sgd', got {preset.optimizer!r}")


def lr_factor(preset: Preset, progress: float) -> float:
    """Multiplier of the base learning rate at ``progress`` in [0, 1].

    Examples
    --------
    >>> lr_factor(PRESETS["paper"], 0.7)
    1.0
    >>> round(lr_factor(PRESETS["adamw"], 1.0), 3)
    0.01
    """
    progress = min(max(float(progress), 0.0), 1.0)
    if preset.warmup > 0 and progress < preset.warmup:
        return max(progress / preset.warmup, 0.01)
    if preset.schedule == "cosine":
        rest = (progress - preset.warmup) / max(1.0 - preset.warmup, 1e-12)
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * rest))
    return 1.0
