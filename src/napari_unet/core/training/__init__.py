"""Training: the settings, the data, the loop, validation and checkpoints.

- :mod:`.config` — :class:`TrainConfig`: every setting of a run declared once (help text,
  bounds, command-line option, place in the Train widget's form), checked when made.
- :mod:`.plan` — :func:`plan`: every default resolved in one place with its reason (the device
  and volume recipes, the rate by run length, the fine-tuning rate, the automatic tile, the
  batch rule, the memory check); :func:`gui_defaults` / :func:`gui_defaults_3d` are the plans
  of the Train widget's starting budget.
- :mod:`.recipes` — what the plan fills unset settings from: the CPU and volume recipes, the
  learning rate by run length, the fine-tuning rate, the starting budgets.
- :mod:`.presets` — the optimisers (``adamw``, ``paper``) and their learning-rate schedules.
- :mod:`.data` — :class:`TrainingPair` and what is computed once per pair (normalised padded
  image, target, weight map).
- :mod:`.patches` — patch sampling and the validation band held out of each image.
- :mod:`.loss` — the weighted soft-max cross-entropy.
- :mod:`.trainer` — :class:`Trainer`: the loop, a generator of :class:`TrainEvent`; its parts:
  :mod:`.budget` (steps and seconds), :mod:`.schedule` (when to validate, the time kept for
  the end-of-run choice), :mod:`.batch` (one augmented batch), :mod:`.network` (the network
  trained: new or continued), :mod:`.pretrain` (the 2D pre-training of a 3D U-Net),
  :mod:`.control` (stop, pause, resume).
- :mod:`.validation` — validation through the prediction users get; :mod:`.choice` — the
  post-processing chosen on the validation band at the end of a run; :mod:`.cell_size` — the
  smallest object a 3D model keeps, from its annotated cells; :mod:`.keep` — the
  better of the previous and the trained model at the end of a fine-tuning.
- :mod:`.checkpoint` — a checkpoint: one complete file (weights, optimiser, random states,
  step) written atomically, and its model file (bit-exact resume); :mod:`.identity` — what
  makes a run this run (a resume on other data or settings is refused).
- :mod:`.distributed` — several processes under ``torchrun`` (DDP).
"""

from napari_unet.core.training.config import TrainConfig
from napari_unet.core.training.data import PreparedImage, TrainingPair, prepare_pairs
from napari_unet.core.training.patches import PatchSampler, ValidationRegion, split_validation
from napari_unet.core.training.plan import DataSummary, Plan, gui_defaults, gui_defaults_3d, plan
from napari_unet.core.training.presets import PRESETS, Preset, get_preset
from napari_unet.core.training.recipes import (
    FINE_TUNE_LR_FACTOR,
    LONG_RUN,
    config_for_device,
    cpu_recipe_lr,
    fine_tune,
    interactive_budget,
)
from napari_unet.core.training.trainer import Trainer, TrainEvent

__all__ = [
    "FINE_TUNE_LR_FACTOR",
    "LONG_RUN",
    "PRESETS",
    "DataSummary",
    "PatchSampler",
    "Plan",
    "PreparedImage",
    "Preset",
    "TrainConfig",
    "TrainEvent",
    "Trainer",
    "TrainingPair",
    "ValidationRegion",
    "config_for_device",
    "cpu_recipe_lr",
    "fine_tune",
    "get_preset",
    "gui_defaults",
    "gui_defaults_3d",
    "interactive_budget",
    "plan",
    "prepare_pairs",
    "split_validation",
]
