"""The training plan: every default of a run resolved in one place, each with its reason.

nnU-Net's idea: what the user chose, a summary of the data, the device and the number of
processes go in; a complete :class:`~napari_unet.core.training.config.TrainConfig`, the
network's input tile and the reason of every value the user did not choose come out.
``napari-unet train``, the Train widget's form and the
:class:`~napari_unet.core.training.trainer.Trainer` call :func:`plan`, so they resolve the same
settings the same way:

- **the recipe** — on a CPU the 2D ``adamw`` run is the CPU recipe (depth 3, tile 156, batch
  2, no drop-out: it learns more per minute on a CPU than the paper's network; ISBI 2012, 15
  minutes); volumes (``ndim=3``) get the volume recipe (depth 3, 8 base channels on a CPU and
  32 on a GPU, batch normalisation, batch 2, 2e-3, a quarter of the budget pre-training in
  2D); otherwise the paper's network (depth 4, drop-out 0.5, 64 base channels on a GPU, 16 on
  a CPU);
- **the rate by run length** — :func:`~napari_unet.core.training.recipes.cpu_recipe_lr`; fine-tuning at
  :data:`~napari_unet.core.training.recipes.FINE_TUNE_LR_FACTOR` of the base rate;
- **validation** every 100 steps, every 1000 in a long CPU-recipe run (as often in seconds as
  100 steps of the paper's network);
- **the automatic tile** — :func:`auto_tile`;
- **the batch rule** — under several processes the global batch is a multiple of their number;
- **the memory check** — :func:`napari_unet.core.model.check_memory` refuses, naming smaller
  settings, a run the device cannot hold.

A :class:`TrainConfig` given to :func:`plan` counts as chosen in every field (``None`` in
``lr``, ``batch_size`` and ``tile`` meaning "automatic"): the Trainer plans what it is given.

>>> p = plan({"steps": 1500, "time_limit": 120.0}, DataSummary(((256, 256),)), device="cpu")
>>> p.config.depth, p.config.lr, p.tile_shape
(3, 0.002, (156, 156))
>>> p.reasons["tile"]
'156: the CPU recipe'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from napari_unet.core.device import pick_device
from napari_unet.core.model.shapes import (
    anisotropic_pool,
    pool_levels,
    valid_input_shape,
    valid_output_shape,
)
from napari_unet.core.training.config import TrainConfig
from napari_unet.core.training.patches import tile_per_axis
from napari_unet.core.training.presets import get_preset
from napari_unet.core.training.recipes import (
    CPU_RECIPE,
    FINE_TUNE_LR_FACTOR,
    VOLUME_RECIPE,
    cpu_recipe_lr,
    fine_tune,
    interactive_budget,
    is_long_run,
)

__all__ = ["DataSummary", "Plan", "auto_tile", "gui_defaults", "gui_defaults_3d", "plan"]

@dataclasses.dataclass(frozen=True)
class DataSummary:
    """What the plan needs to know of the training data: the spatial shape of every image
    (2D ``(H, W)`` or 3D ``(Z, Y, X)``), the channels and the voxel spacing (None: isotropic).

    >>> DataSummary(((30, 40), (50, 20))).ndim
    2
    """

    shapes: tuple[tuple[int, ...], ...]
    channels: int = 1
    spacing: tuple[float, ...] | None = None

    @property
    def ndim(self) -> int:
        return len(self.shapes[0])

    @classmethod
    def of(cls, pairs: Sequence) -> DataSummary:
        """The summary of :class:`~napari_unet.core.training.data.TrainingPair` objects (the
        spacing of the pairs when they all share one)."""
        spacings = {p.spacing for p in pairs if getattr(p, "spacing", None) is not None}
        return cls(tuple(tuple(int(s) for s in p.shape) for p in pairs),
                   int(pairs[0].channels), spacings.pop() if len(spacings) == 1 else None)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The resolved settings of a run: ``config``, the device, the number of processes, the
    network's input ``tile_shape`` (one side per axis; None without data) and ``reasons``
    (setting → why it has its value, for each setting the user did not choose)."""

    config: TrainConfig
    device: torch.device
    processes: int = 1
    tile_shape: tuple[int, ...] | None = None
    reasons: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def tile(self) -> int | tuple[int, ...] | None:
        """The tile as stored in a model's metadata: one side for a 2D square, else the shape."""
        shape = self.tile_shape
        if shape is None:
            return None
        return shape[0] if len(shape) == 2 and len(set(shape)) == 1 else shape

    def describe(self, names: Sequence[str] | None = None) -> str:
        """The reasons as one line, e.g. ``tile 156: the CPU recipe; ...``."""
        keys = [k for k in (names if names is not None else self.reasons) if k in self.reasons]
        return "; ".join(f"{k.replace('_', ' ')} {self.reasons[k]}" for k in keys)


def plan(choices: Mapping[str, Any] | TrainConfig = (), data: DataSummary | None = None, *,
         device=None, processes: int = 1, architecture: Mapping[str, Any] | None = None,
         fine_tuning: bool = False, check_memory: bool = True) -> Plan:
    """Resolve a run's settings; see the module docstring for the rules.

    Parameters
    ----------
    choices : mapping or TrainConfig
        What the user chose: a mapping of :class:`TrainConfig` fields (the others are planned),
        or a TrainConfig (every field chosen; ``None`` in ``lr``, ``batch_size`` and ``tile``
        planned).
    data : DataSummary, optional
        The training data; without it the tile is not resolved and memory not checked.
    device : str or torch.device, optional
        The device (default: the chosen ``device`` field, else "auto").
    processes : int
        Training processes (torchrun); the global batch must be a multiple of them.
    architecture : mapping, optional
        The architecture of a model the run continues (``UNet.config``): its depth, width,
        classes, normalisation and pooling replace the config's.
    fine_tuning : bool
        The run fine-tunes trained weights at :data:`FINE_TUNE_LR_FACTOR` of the base rate
        (chosen or planned): the Train widget's Continue and "Fine-tune from…", ``train
        --init`` without ``--lr`` (whose ``--lr`` is the fine-tuning rate itself).
    check_memory : bool
        Refuse (ValueError naming smaller settings) a run the device cannot hold.
    """
    given = _given(choices)
    if architecture is not None:  # a continued model keeps its architecture
        given.update({k: architecture[k] for k in ("depth", "base_channels", "num_classes",
                                                   "norm") if k in architecture})
    dev = pick_device(device if device is not None else given.get("device", "auto"))
    values, reasons, recipe = _recipe(given, data, dev)
    _resolve_rates(values, reasons, given, recipe=recipe)
    config = TrainConfig(**values)
    if fine_tuning:
        config = fine_tune(config)
        reasons["lr"] = (f"{_shown(config.lr)}: {FINE_TUNE_LR_FACTOR:g} × {_shown(values['lr'])}"
                         " (fine-tuning a trained model)")
    _check_processes(config, processes)
    tile_shape = None
    if data is not None:
        arch = _architecture(config, data, architecture)
        tile_shape, why = auto_tile(config.tile, data.shapes, depth=arch["depth"],
                                    padding=arch["padding"], pool=arch["pool"])
        reasons.setdefault("tile", why)
        if check_memory:
            _check_memory(config, arch, tile_shape, dev, processes)
    return Plan(config, dev, processes, tile_shape, reasons)


def _given(choices) -> dict[str, Any]:
    if isinstance(choices, TrainConfig):
        return {f.name: getattr(choices, f.name) for f in dataclasses.fields(TrainConfig)}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(choices) - names
    if unknown:
        raise TypeError(f"choices: unknown setting(s) {sorted(unknown)}; expected fields of "
                        "TrainConfig")
    return dict(choices)


def _recipe(given: dict, data: DataSummary | None, dev: torch.device
            ) -> tuple[dict, dict, str]:
    """The chosen values and, for the others, the recipe's (with the reason); the recipe."""
    values, reasons = dict(given), {}
    values.setdefault("ndim", data.ndim if data is not None else 2)
    if "steps" not in given:  # a time limit alone ends the run; no budget: 1000 steps
        values["steps"] = None if given.get("time_limit") else 1000
        if values["steps"]:
            reasons["steps"] = "1000: no budget given"
    cpu = dev.type == "cpu"
    if values["ndim"] == 3:
        recipe = {**VOLUME_RECIPE, "base_channels": 8 if cpu else 32}
        name = "the volume recipe"
    elif cpu and values.get("preset", "adamw") == "adamw":
        recipe = {**CPU_RECIPE, "base_channels": 16}
        name = "the CPU recipe"
        if values.get("depth", recipe["depth"]) != recipe["depth"]:
            del recipe["tile"]  # the recipe's tile is valid for its depth only
        recipe["validate_every"] = 100
        if is_long_run(values.get("steps"), values.get("time_limit")):
            recipe["validate_every"] = 1000
            reasons["validate_every"] = ("1000: a long CPU-recipe run (as often in seconds as "
                                         "100 steps of the paper's network)")
    else:
        recipe = {"depth": 4, "dropout": 0.5, "base_channels": 16 if cpu else 64}
        name = "the paper's network" + (", narrow on a CPU" if cpu else "")
    for key, value in recipe.items():
        if key not in given:
            values[key] = value
            reasons.setdefault(key, f"{_shown(value)}: {name}")
    return values, reasons, name


def _resolve_rates(values: dict, reasons: dict, given: dict, *, recipe: str) -> None:
    """The learning rate and batch: chosen, the recipe's, or the preset's."""
    preset = get_preset(values.get("preset", "adamw"))
    if values.get("lr") is None:
        if "lr" not in given and recipe == "the CPU recipe":
            values["lr"] = cpu_recipe_lr(steps=values.get("steps"),
                                         time_limit=values.get("time_limit"))
            length = "a long run" if values["lr"] == 1e-3 else "a run under 10 min or 8000 steps"
            reasons["lr"] = f"{_shown(values['lr'])}: the CPU recipe for {length}"
        else:
            values["lr"] = preset.lr
            reasons["lr"] = f"{_shown(preset.lr)}: the {values.get('preset', 'adamw')} preset's"
    if values.get("batch_size") is None:
        values["batch_size"] = preset.batch_size
        reasons["batch_size"] = (f"{preset.batch_size}: the {values.get('preset', 'adamw')} "
                                 "preset's")


def _check_processes(config: TrainConfig, processes: int) -> None:
    """The batch rule: the global batch splits evenly between the processes."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes: expected a positive integer, got {processes!r}")
    batch = config.batch_size
    if batch % processes:
        fix = -(-batch // processes) * processes
        raise ValueError(
            f"batch_size: the global batch must be a multiple of the {processes} processes "
            f"(each trains on batch / {processes} patches), got {batch}; use a batch of {fix}")


def _architecture(config: TrainConfig, data: DataSummary, source) -> dict[str, Any]:
    """The network the run trains: ``source`` (a continued model's ``UNet.config``) or the
    config's (3D: pooled along a coarse z by the spacing), with its pooling factors per level
    and axis."""
    nd = config.ndim
    if source is not None:
        pool = source.get("pool")
        arch = dict(in_channels=int(source.get("in_channels", data.channels)),
                    num_classes=int(source["num_classes"]), depth=int(source["depth"]),
                    base_channels=int(source["base_channels"]),
                    padding=source.get("padding", "valid"))
    else:
        spacing = config.spacing if config.spacing is not None else data.spacing
        pool = anisotropic_pool(spacing, config.depth) if nd == 3 and spacing else None
        arch = dict(in_channels=data.channels, num_classes=config.num_classes,
                    depth=config.depth, base_channels=config.base_channels, padding="valid")
    arch["pool"] = None if nd == 2 else tuple(
        f * nd if len(f) == 1 else tuple(f) for f in pool_levels(pool, arch["depth"]))
    return arch


def auto_tile(tile, shapes: Sequence[Sequence[int]], *, depth: int, padding: str = "valid",
              pool=None) -> tuple[tuple[int, ...], str]:
    """The network's input tile (one side per axis) for images of ``shapes``, and why.

    ``tile`` given (an int or one side per axis): checked (ValueError naming the valid sizes).
    None: in 2D the smallest valid tile whose output covers the largest image side, at most
    388 output pixels (572 input at depth 4, the paper's); in 3D per axis the output covers the
    volume, at most 64 voxels (CPU-sized).

    >>> auto_tile(None, [(100, 60)], depth=2)[0]
    (140, 140)
    >>> auto_tile(156, [(500, 500)], depth=3)
    ((156, 156), '156: chosen')
    """
    nd = len(shapes[0])
    pool = None if nd == 2 else pool
    if tile is not None:
        shape = tile_per_axis(tile, nd)
        try:
            valid_output_shape(shape, depth, padding=padding, pool=pool)
        except ValueError as err:  # which setting, and the valid sizes
            raise ValueError(f"tile: {shape} is not a valid input; {err}") from None
        return shape, f"{_shown(tile)}: chosen"
    if nd == 2:
        biggest = max(max(s) for s in shapes)
        margin = 0
        if padding == "valid":
            smallest = valid_input_shape(1, depth)[0]
            margin = (smallest - valid_output_shape((smallest,), depth)[0]) // 2
        side = valid_input_shape(min(biggest, 388) + 2 * margin, depth, padding=padding)[0]
        return (side, side), f"{side}: the smallest valid tile whose output covers the images"
    ones = (1,) * nd
    smallest = valid_input_shape(ones, depth, padding=padding, pool=pool)
    out = valid_output_shape(smallest, depth, padding=padding, pool=pool)
    margins = [(a - b) // 2 for a, b in zip(smallest, out, strict=True)]
    want = [min(max(s[a] for s in shapes), 64) + 2 * margins[a] for a in range(nd)]
    shape = tuple(int(s) for s in valid_input_shape(want, depth, padding=padding, pool=pool))
    return shape, (f"{'x'.join(map(str, shape))}: the output covers the volume, at most 64 "
                   "voxels per axis")


def _check_memory(config: TrainConfig, arch: dict, tile_shape, dev, processes: int) -> None:
    from napari_unet.core.model.memory import check_memory

    nd = config.ndim
    check_memory(in_channels=arch["in_channels"], num_classes=arch["num_classes"],
                 depth=arch["depth"], base_channels=arch["base_channels"],
                 tile=tile_shape[0] if nd == 2 and len(set(tile_shape)) == 1 else tile_shape,
                 batch_size=max(config.batch_size // processes, 1), ndim=nd,
                 padding=arch["padding"], device=dev, pool=arch["pool"])


def gui_defaults(device="auto") -> TrainConfig:
    """The settings the GUI's Start uses untouched for a 2D image (and ``bench_fewcells.py``):
    the plan of the Train widget's starting budget (:func:`interactive_budget`).

    On a CPU: depth 3, 16 base channels, tile 156, batch 2, AdamW 2e-3 (the rate of
    :func:`cpu_recipe_lr` for this budget), no drop-out, for at most 1500 steps or 2 minutes.
    On a GPU: the paper's network (depth 4, 64 base channels, drop-out 0.5) for 2000 steps or
    5 minutes.

    >>> gui_defaults("cpu").tile
    156
    """
    steps, seconds = interactive_budget(device, 2)
    return plan({"steps": steps, "time_limit": seconds, "device": str(device)}).config


def gui_defaults_3d(device="auto", *, spacing=None) -> TrainConfig:
    """The settings a 3D training starts from in the GUI: the volume recipe (a small 3D U-Net
    that trains on a CPU in minutes: depth 3, 8 base channels on a CPU, 32 on a GPU, batch
    normalisation, pooling from ``spacing`` (:func:`napari_unet.core.model.anisotropic_pool`),
    batch 2, AdamW 2e-3, the first quarter of the budget training the same network in 2D on the
    annotated xy-planes) for the form's starting budget (1500 steps or 5 minutes on a CPU; 2000
    steps or 10 minutes on a GPU).

    >>> cfg = gui_defaults_3d("cpu", spacing=(4, 1, 1))
    >>> cfg.ndim, cfg.depth, cfg.base_channels, cfg.spacing
    (3, 3, 8, (4.0, 1.0, 1.0))
    """
    steps, seconds = interactive_budget(device, 3)
    return plan({"steps": steps, "time_limit": seconds, "device": str(device), "ndim": 3,
                 "spacing": spacing}).config


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    return str(value)

