"""Training settings: :class:`TrainConfig` (every option of a training, checked when made) and
:func:`gui_defaults`, the settings the GUI's Start uses untouched.

Kept apart from :mod:`napari_unet.core.training.trainer` (the training loop): the command
line and the widgets resolve settings without building a trainer.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch

from napari_unet.core.augment.pipeline import AugmentConfig
from napari_unet.core.device import pick_device
from napari_unet.core.normalize import DEFAULT_NORMALIZATION
from napari_unet.core.training.presets import get_preset

__all__ = ["FINE_TUNE_LR_FACTOR", "LONG_RUN", "TrainConfig", "cpu_recipe_lr", "fine_tune",
           "gui_defaults", "gui_defaults_3d"]

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
#: seeds (4e-3: 0.831 / 0.836; 5e-4: 0.850; BENCHMARKS.md, fourteenth session). Where between
#: the two measured lengths the better rate changes is not measured: the bounds lie between them.
LONG_RUN = (600.0, 8000)


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
    seconds, n = LONG_RUN
    if steps is None and time_limit is None:
        return 1e-3
    long = (time_limit is None or time_limit >= seconds) and (steps is None or steps >= n)
    return 1e-3 if long else 2e-3


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run; :meth:`for_device` picks sizes that suit the device.

    ``steps`` and ``time_limit`` are budgets: the run ends at whichever comes first
    (``steps=None`` for time only). ``time_limit`` is the run's wall-clock budget in seconds
    from the start of :meth:`Trainer.run`, pauses excluded: preparing the targets, the steps,
    the validations, the checkpoints and the end-of-run choice of the post-processing all
    count (that choice gets at most a quarter of it:
    :data:`napari_unet.core.training.trainer.CHOICE_SHARE`), and a step or validation that would end
    past it is not started. ``lr`` and ``batch_size`` default to the preset's. ``tile`` is
    the network's input side (None: the smallest valid tile whose output covers the largest
    image, at most 572, the paper's; for volumes at most 64 output
    voxels per axis); an int is a square (a cube for ``ndim=3``), a tuple gives one side per
    axis. ``ndim`` is the spatial dimension of the data and the model (3: the 3D U-Net on
    ``(Z, Y, X)`` volumes); ``spacing`` the voxel size per axis (anisotropic border weights,
    elastic displacements in physical units and, in 3D, the pooling of
    :func:`napari_unet.core.model.anisotropic_pool`); ``norm="batch"`` adds batch
    normalisation (Çiçek et al. 2016). ``validate_every=0`` disables
    validation; ``val_fraction`` is the band of each image held out (0: none). ``cpu_bf16``:
    bfloat16 autocast of the forward pass on the CPU ("auto": where the CPU computes bf16
    natively, :func:`napari_unet.core.device.cpu_supports_bf16`; weights and loss stay float32).
    """

    preset: str = "adamw"
    steps: int | None = 1000
    time_limit: float | None = None
    depth: int = 4
    base_channels: int = 16
    num_classes: int = 2
    dropout: float = 0.5
    lr: float | None = None
    batch_size: int | None = None
    tile: int | tuple[int, ...] | None = None
    w0: float = 10.0
    sigma: float = 5.0
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    validate_every: int = 100
    val_fraction: float = 0.1
    device: str = "auto"
    #: bfloat16 autocast on the CPU: "auto" (where the CPU has AVX-512 BF16 / AMX), "on", "off";
    #: master weights and the loss stay float32
    cpu_bf16: str = "auto"
    #: torch CPU threads while :meth:`Trainer.run` trains (restored afterwards); None: all cores
    threads: int | None = None
    seed: int = 0
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int | None = None
    history_every: int = 10
    normalization: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    #: spatial dimensions of the data and the network: 2 (images) or 3 (volumes)
    ndim: int = 2
    #: pixel (voxel) size per spatial axis, e.g. (4.0, 1.0, 1.0); None: isotropic
    spacing: tuple[float, ...] | None = None
    #: None or "batch" (batch normalisation before every ReLU, as in the 3D U-Net paper)
    norm: str | None = None
    #: 3D only: the share of the time budget spent first training the same network in 2D on
    #: the annotated xy-planes, whose weights then start the 3D U-Net
    #: (:func:`napari_unet.core.model.inflate_to_3d`); 0: the 3D U-Net starts from He's init
    pretrain_2d: float = 0.0

    @classmethod
    def for_device(cls, device: str | torch.device = "auto", **changes) -> TrainConfig:
        """Defaults for a device: the paper's 64 base channels on a GPU, 16 on the CPU."""
        dev = pick_device(device)
        base = 64 if dev.type in ("cuda", "mps") else 16
        return cls(**{"base_channels": base, "device": str(device), **changes})

    def __post_init__(self) -> None:
        get_preset(self.preset)
        if self.steps is None and self.time_limit is None:
            raise ValueError("steps, time_limit: give a step budget, a time limit, or both")
        if self.steps is not None and self.steps == 0:
            raise ValueError("steps: expected at least 1 step, got 0 (nothing would be trained)")
        if self.time_limit is not None and not (
            math.isfinite(self.time_limit) and self.time_limit > 0
        ):
            raise ValueError(f"time_limit: expected seconds > 0, got {self.time_limit!r}")
        if self.num_classes not in (2, 3):
            raise ValueError(f"num_classes: expected 2 or 3, got {self.num_classes!r}")
        if self.cpu_bf16 not in ("auto", "on", "off"):
            raise ValueError(f"cpu_bf16: expected 'auto', 'on' or 'off', got {self.cpu_bf16!r}")
        if isinstance(self.ndim, bool) or self.ndim not in (2, 3):
            raise ValueError(f"ndim: expected 2 (images) or 3 (volumes), got {self.ndim!r}")
        if self.norm not in (None, "batch"):
            raise ValueError(f"norm: expected None or 'batch', got {self.norm!r}")
        if self.spacing is not None:
            from napari_unet.core.checks import check_spacing

            self.spacing = check_spacing(self.spacing, self.ndim)
        if self.tile is not None and not isinstance(self.tile, int | bool):
            from napari_unet.core.training.patches import tile_per_axis

            self.tile = tile_per_axis(self.tile, self.ndim)
        for name, low in (("steps", 1), ("batch_size", 1), ("tile", 1), ("depth", 0),
                          ("base_channels", 1), ("validate_every", 0), ("seed", 0),
                          ("history_every", 1), ("checkpoint_every", 0), ("threads", 1)):
            if not (name == "tile" and isinstance(self.tile, tuple)):
                _check_int(name, getattr(self, name), low)
        for name, value, ok, want in (
            ("lr", self.lr, lambda v: v > 0, "> 0"),
            ("dropout", self.dropout, lambda v: 0 <= v < 1, "in [0, 1)"),
            ("w0", self.w0, lambda v: v >= 0, ">= 0"),
            ("sigma", self.sigma, lambda v: v > 0, "> 0"),
            ("val_fraction", self.val_fraction, lambda v: 0 <= v < 0.5, "in [0, 0.5)"),
            ("pretrain_2d", self.pretrain_2d, lambda v: 0 <= v < 1, "in [0, 1)"),
        ):
            if value is not None and not (math.isfinite(value) and ok(value)):
                raise ValueError(f"{name}: expected a number {want}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["checkpoint_dir"] = None if self.checkpoint_dir is None else str(self.checkpoint_dir)
        return d


def gui_defaults(device="auto"):
    """The training settings the GUI's Start uses untouched (and ``bench_fewcells.py``).

    On a CPU: depth 3, the device's narrow width, tile 156, batch 2, AdamW 2e-3 (the rate of
    :func:`cpu_recipe_lr` for this budget), no drop-out, for at most 1500 steps or 2 minutes.
    On a GPU: the paper's network (depth 4, 64 base channels, drop-out 0.5) for 2000 steps or
    5 minutes.

    >>> gui_defaults("cpu").tile
    156
    """
    if pick_device(device).type == "cpu":
        steps, seconds = 1500, 120.0
        return TrainConfig.for_device(device, depth=3, tile=156, batch_size=2,
                                      lr=cpu_recipe_lr(steps=steps, time_limit=seconds),
                                      dropout=0.0, steps=steps, time_limit=seconds)
    return TrainConfig.for_device(device, depth=4, steps=2000, time_limit=300.0)


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


def gui_defaults_3d(device="auto", *, spacing=None):
    """The settings a 3D training (``ndim=3``) starts from: a small 3D U-Net that trains on a
    CPU in minutes (``napari-unet train --ndim 3``'s defaults, and the GUI's for volumes).

    On a CPU: depth 3, 8 base channels, batch normalisation, pooling from ``spacing``
    (:func:`napari_unet.core.model.anisotropic_pool`, e.g. 1×2×2 first for a z step 4× the
    xy pixel), tiles of at most 64 output voxels per axis, batch 2, AdamW 2e-3, for at most
    1500 steps or 5 minutes, the first quarter of which trains the same network in 2D on the
    annotated xy-planes (``pretrain_2d``; its weights, inflated, start the 3D U-Net). On a
    GPU: depth 3, 32 base channels (the 3D U-Net paper's), 2000 steps or 10 minutes.

    >>> cfg = gui_defaults_3d("cpu", spacing=(4, 1, 1))
    >>> cfg.ndim, cfg.depth, cfg.base_channels, cfg.spacing
    (3, 3, 8, (4.0, 1.0, 1.0))
    """
    common = dict(ndim=3, spacing=spacing, norm="batch", depth=3, dropout=0.0, batch_size=2,
                  lr=2e-3, pretrain_2d=0.25)
    if pick_device(device).type == "cpu":
        return TrainConfig.for_device(device, base_channels=8, steps=1500, time_limit=300.0,
                                      **common)
    return TrainConfig.for_device(device, base_channels=32, steps=2000, time_limit=600.0,
                                  **common)


def _check_int(name: str, value, low: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or int(value) != value or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
