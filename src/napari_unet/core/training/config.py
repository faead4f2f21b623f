"""The training settings, declared once: :class:`TrainConfig`.

Each field's ``metadata`` holds its help text, bounds and where it appears: ``flag`` (the
``napari-unet train`` option, :func:`napari_unet.commands.options.add_config_arguments`) and
``section`` (``"basic"`` or ``"advanced"`` in the Train widget's form,
:mod:`napari_unet.widgets.train_form`); ``default_help`` says what an unset value becomes. The
defaults a run gets when a field is not set (the device and volume recipes, the rate by run
length, the automatic tile) are resolved by one planner, :func:`napari_unet.core.training.plan`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from napari_unet.core.augment.config import AugmentConfig
from napari_unet.core.normalize import DEFAULT_NORMALIZATION
from napari_unet.core.training.presets import PRESETS, get_preset

__all__ = ["TrainConfig", "setting_fields"]

#: the Train widget's device choices (the command line also takes cuda:N)
DEVICES = ("auto", "cpu", "cuda", "mps")
#: the kinds of training target (:data:`napari_unet.core.targets.TARGETS`) and "auto"
TARGET_CHOICES = ("auto", "objects", "tissue")


def _setting(default=None, help: str = "", *, default_factory=None, **meta) -> Any:
    """A field with its help text and metadata (see the module docstring)."""
    meta["help"] = help
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run, checked when made; the declaration of every setting.

    ``steps`` and ``time_limit`` are budgets: the run ends at whichever comes first
    (``steps=None`` for time only). ``time_limit`` is the run's wall-clock budget in seconds
    from the start of :meth:`Trainer.run`, pauses excluded: preparing the targets, the steps,
    the validations, the checkpoints and the end-of-run choice of the post-processing all
    count (that choice gets at most a quarter of it:
    :data:`napari_unet.core.training.schedule.CHOICE_SHARE`), and a step or validation that
    would end past it is not started. ``lr`` and ``batch_size`` None: the preset's. ``tile`` is
    the network's input side (None: the smallest valid tile whose output covers the largest
    image, at most 572, the paper's; for volumes at most 64 output voxels per axis,
    :func:`napari_unet.core.training.plan.auto_tile`); an int is a square (a cube for
    ``ndim=3``), a tuple gives one side per axis. ``ndim`` is the spatial dimension of the data
    and the model (3: the 3D U-Net on ``(Z, Y, X)`` volumes); ``spacing`` the voxel size per
    axis (anisotropic border weights, elastic displacements in physical units and, in 3D, the
    pooling of :func:`napari_unet.core.model.anisotropic_pool`); ``norm="batch"`` adds batch
    normalisation (Çiçek et al. 2016). ``validate_every=0`` disables validation;
    ``val_fraction`` is the band of each image held out (0: none). ``cpu_bf16``: bfloat16
    autocast of the forward pass on the CPU ("auto": where the CPU computes bf16 natively,
    :func:`napari_unet.core.device.cpu_supports_bf16`; weights and loss stay float32);
    ``cpu_channels_last``: channels-last tensors on the CPU
    (:func:`napari_unet.core.device.use_channels_last`).

    Examples
    --------
    >>> TrainConfig(steps=10, depth=2).depth
    2
    >>> TrainConfig(steps=0)
    Traceback (most recent call last):
    ...
    ValueError: steps: expected at least 1 step, got 0 (nothing would be trained); use 1 or more
    """

    preset: str = _setting(
        "adamw", "adamw (default, faster) or paper (SGD, momentum 0.99, batch 1)",
        flag="--preset", choices=tuple(PRESETS), section="advanced")
    steps: int | None = _setting(
        1000, "step budget (one batch each); training ends at whichever budget comes first",
        flag="--steps", low=1, high=1_000_000, step=100, section="basic",
        default_help="1000 unless --time-limit is given")
    time_limit: float | None = _setting(
        None, "the run's wall-clock budget in seconds, validation, checkpoints and the final "
        "choice of the post-processing (at most a quarter of it) included, pauses excluded; no "
        "step or validation starts that would end past it",
        flag="--time-limit", low=0.0, high=600_000.0, step=1.0, section="basic",
        label="time (min)", scale=60.0, default_help="none")
    depth: int = _setting(
        4, "number of poolings (the paper: 4)", flag="--depth", low=1, high=6,
        section="advanced", default_help="3 in the CPU and volume recipes, else 4, the paper's")
    base_channels: int = _setting(
        16, "channels of the first level (narrow on a CPU: fast; the paper's 64 on a GPU)",
        flag="--base-channels", low=2, high=128, section="advanced", label="base channels",
        default_help="16 on a CPU, 64 on a GPU; volumes 8 / 32")
    num_classes: int = _setting(
        2, "2: background / cell, 3: background / interior / border", flag="--classes",
        choices=(2, 3), default_help="2")
    target: str = _setting(
        "auto", "what the cells are: objects (on a background, touching ones separated by a "
        "background border: the paper's target), tissue (cells that fill the space: every "
        "cell pixel a cell, the walls between cells a class of their own, 3 classes) or auto "
        "(tissue where at least half of the painted cells' outline touches another cell)",
        flag="--target", choices=TARGET_CHOICES, section="advanced",
        default_help="auto; a continued model keeps its own")
    dropout: float = _setting(
        0.5, "drop-out at the end of the contracting path (the paper: 0.5; 0 converges faster "
        "in short runs)", flag="--dropout", low=0.0, high=0.9, step=0.1, decimals=2,
        section="advanced", label="drop-out",
        default_help="0.5, the paper's; 0 in the CPU and volume recipes")
    lr: float | None = _setting(
        None, "peak learning rate (adamw: warm-up then cosine decay); lower it if the loss "
        "jumps or becomes NaN", flag="--lr", low=1e-5, high=1.0, step=1e-3, decimals=5,
        section="advanced",
        default_help="the preset's; in the CPU recipe 2e-3, or 1e-3 for a long run (every "
        "budget given at least 600 s / 8000 steps); fine-tuning a quarter of it")
    batch_size: int | None = _setting(
        None, "patches per step; under torchrun the global batch, a multiple of the number of "
        "processes", flag="--batch-size", low=1, high=64, section="advanced", label="batch",
        default_help="the preset's; 2 in the CPU and volume recipes")
    tile: int | tuple[int, ...] | None = _setting(
        None, "network input side in pixels (0 in the form: automatic); with --ndim 3 one side "
        "for a cube or three (Z Y X); an invalid side is refused with the nearest valid ones",
        flag="--tile", nargs="+", metavar="N", low=0, high=2048, step=4, section="advanced",
        default_help="156 in the CPU recipe, else the smallest tile whose output covers the "
        "images, at most 572")
    w0: float = _setting(10.0, "border weight (the paper: 10)", flag="--w0")
    sigma: float = _setting(5.0, "border width in pixels (the paper: 5)", flag="--sigma")
    augment: AugmentConfig = _setting(  # noqa: RUF009 (a dataclasses.field)
        help="elastic deformation, rotation, flips, shifts and gray-value changes of every "
        "sample", default_factory=AugmentConfig)
    validate_every: int = _setting(
        100, "steps between validations (0: none)", flag="--validate-every",
        default_help="100; 1000 in a long CPU-recipe run")
    val_fraction: float = _setting(0.1, "band of each image held out for validation",
                                   flag="--val-fraction")
    device: str = _setting(
        "auto", "auto, cpu, cuda, cuda:N or mps", flag="--device", gui_choices=DEVICES,
        section="basic")
    cpu_bf16: str = _setting(
        "auto", "bfloat16 autocast on the CPU: auto (where AVX-512 BF16/AMX), on, off; weights "
        "and loss stay float32", flag="--cpu-bf16", choices=("auto", "on", "off"))
    cpu_channels_last: str = _setting(
        "auto", "channels-last tensors on the CPU: auto (a 2D network in float32, every 3D "
        "network: where they were measured faster), on, off; the same numbers either way",
        flag="--cpu-channels-last", choices=("auto", "on", "off"))
    #: torch CPU threads while :meth:`Trainer.run` trains (restored afterwards); None: all cores
    threads: int | None = _setting(None, "torch CPU threads while training (None: all cores)")
    seed: int = _setting(0, "random seed", flag="--seed")
    checkpoint_dir: str | Path | None = _setting(  # noqa: RUF009 (a dataclasses.field)
        None, "folder for last/best checkpoints", flag="--checkpoint-dir",
        default_help="MODEL.checkpoints/")
    checkpoint_every: int | None = _setting(None, "steps between last checkpoints")
    history_every: int = _setting(10, "steps between entries of the loss history")
    normalization: dict = _setting(  # noqa: RUF009 (a dataclasses.field)
        help="intensity normalisation stored with the model",
        default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    ndim: int = _setting(
        2, "2: 2D images and a 2D U-Net; 3: 3D TIFF stacks (Z, Y, X) and the 3D U-Net",
        flag="--ndim", choices=(2, 3), default_help="2")
    spacing: tuple[float, ...] | None = _setting(
        None, "pixel size per axis, e.g. --spacing 4 1 1 for a z step 4x the xy pixel: border "
        "weights in these units and, with --ndim 3, pooling 1x2x2 along a coarse z",
        flag="--spacing", nargs="+", metavar="S", default_help="isotropic")
    #: None or "batch" (batch normalisation before every ReLU, as in the 3D U-Net paper)
    norm: str | None = _setting(None, "None or 'batch' (batch normalisation)")
    pretrain_2d: float = _setting(
        0.0, "with --ndim 3: the share of the budget spent first training the same network in "
        "2D on the annotated xy-planes, whose weights then start the 3D U-Net (0: none)",
        flag="--pretrain-2d", metavar="SHARE", default_help="the volume recipe's 0.25")

    def __post_init__(self) -> None:
        get_preset(self.preset)
        if self.steps is None and self.time_limit is None:
            raise ValueError("steps, time_limit: give a step budget, a time limit, or both")
        if self.steps is not None and self.steps == 0:
            raise ValueError("steps: expected at least 1 step, got 0 (nothing would be "
                             "trained); use 1 or more")
        if self.time_limit is not None and not (
            math.isfinite(self.time_limit) and self.time_limit > 0
        ):
            raise ValueError(f"time_limit: expected seconds > 0, got {self.time_limit!r}; "
                             "use a positive number of seconds")
        if self.num_classes not in (2, 3):
            raise ValueError(f"num_classes: expected 2 or 3, got {self.num_classes!r}")
        if self.target not in TARGET_CHOICES:
            raise ValueError(f"target: expected one of {', '.join(TARGET_CHOICES)}, got "
                             f"{self.target!r}")
        for name in ("cpu_bf16", "cpu_channels_last"):
            if getattr(self, name) not in ("auto", "on", "off"):
                raise ValueError(f"{name}: expected 'auto', 'on' or 'off', got "
                                 f"{getattr(self, name)!r}")
        if self.norm not in (None, "batch"):
            raise ValueError(f"norm: expected None or 'batch', got {self.norm!r}")
        if isinstance(self.ndim, bool) or self.ndim not in (2, 3):
            raise ValueError(f"ndim: expected 2 (images) or 3 (volumes), got {self.ndim!r}")
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
        if self.seed is not None and self.seed >= 2**63:  # torch and numpy take 64-bit seeds
            raise ValueError(f"seed: expected an integer from 0 to 2**63 - 1, got "
                             f"{self.seed!r}; use a smaller seed")
        for name, value, ok, want in (
            ("lr", self.lr, lambda v: v > 0, "> 0"),
            ("dropout", self.dropout, lambda v: 0 <= v < 1, "in [0, 1)"),
            ("w0", self.w0, lambda v: v >= 0, ">= 0"),
            ("sigma", self.sigma, lambda v: v > 0, "> 0"),
            ("val_fraction", self.val_fraction, lambda v: 0 <= v < 0.5, "in [0, 0.5)"),
            ("pretrain_2d", self.pretrain_2d, lambda v: 0 <= v < 1, "in [0, 1)"),
        ):
            if value is not None and not (math.isfinite(value) and ok(value)):
                raise ValueError(f"{name}: expected a number {want}, got {value!r}; use a "
                                 f"number {want}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["checkpoint_dir"] = None if self.checkpoint_dir is None else str(self.checkpoint_dir)
        return d


def setting_fields(*, where: str) -> list[dataclasses.Field]:
    """The fields of :class:`TrainConfig` shown ``where``: ``"cli"`` (those with a ``flag``),
    ``"basic"`` or ``"advanced"`` (the form's sections), in declaration order.

    >>> [f.name for f in setting_fields(where="basic")]
    ['steps', 'time_limit', 'device']
    """
    if where == "cli":
        return [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("flag")]
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("section") == where]


def _check_int(name: str, value, low: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or int(value) != value or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}; use {low} "
                         "or more")
