"""How a :class:`~napari_unet.core.training.trainer.Trainer` is set up: the pairs checked, the
device and the processes, the network (new or continued, :mod:`.network`), the plan's rate,
batch and tile (:func:`napari_unet.core.training.plan.plan`, the memory check included), the
optimiser, the budget's clock and the stop / pause control; everything before the first step.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math

import numpy as np
import torch

import napari_unet.core.training.checkpoint as ckpt
import napari_unet.core.training.distributed as ddp
from napari_unet.core.checks import check_training_pairs
from napari_unet.core.device import pick_device, use_channels_last, use_cpu_bf16
from napari_unet.core.model.unet import UNet
from napari_unet.core.training.budget import BudgetClock
from napari_unet.core.training.config import TrainConfig
from napari_unet.core.training.control import RunControl
from napari_unet.core.training.data import as_training_pairs
from napari_unet.core.training.identity import check_same_run
from napari_unet.core.training.network import (
    adopt_architecture,
    load_source,
    new_architecture,
    polarity_normalization,
)
from napari_unet.core.training.plan import DataSummary, plan
from napari_unet.core.training.presets import get_preset, make_optimizer

__all__ = ["TrainerSetup"]

logger = logging.getLogger(__name__)


class TrainerSetup:
    """The set-up part of :class:`~napari_unet.core.training.trainer.Trainer` (see there for
    the parameters)."""

    def __init__(self, pairs, config: TrainConfig | None = None, *, init_model=None, resume=None,
                 force_resume: bool = False):
        self.config = config = TrainConfig() if config is None else config
        self.pairs = as_training_pairs(pairs)
        self._check_ndim()
        check_training_pairs(self.pairs)
        self._setup_processes()
        self.preset = get_preset(config.preset)
        torch.manual_seed(config.seed)
        self.normalization = dict(config.normalization)
        self.history: list[dict] = []
        self.step, self.best = 0, math.inf
        #: the run's steps and seconds (pauses excluded)
        self.budget = BudgetClock(steps=config.steps, time_limit=config.time_limit)
        #: stop / pause / resume requests (thread-safe; they act at the next step)
        self.control = RunControl()
        #: a new network (not fine-tuned, not resumed, not pre-trained yet): the 2D
        #: pre-training may start it
        self.fresh = init_model is None and resume is None
        resume_state = self._build_model(init_model, resume)
        self._setup_optimizer()
        #: output shape of one input tile, one side per spatial axis
        self.out_shape = tuple(self.model.output_shape(self.tile_shape))
        #: the output side (an int in 2D, the per-axis shape in 3D), as :attr:`tile`
        self.out_tile = self.out_shape[0] if self.ndim == 2 else self.out_shape
        self.rng = np.random.default_rng(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        if resume_state is not None:
            if not force_resume:  # the same data and settings, or a deliberate choice
                check_same_run(self, resume_state[2])
            ckpt.restore_trainer(self, *resume_state)
        self.boundary = None  # RNG states at the start of the step under way
        self.last_loss: float | None = None
        #: the validations of the running run (:class:`~napari_unet.core.training.schedule.
        #: ValidationSchedule`), made by :meth:`Trainer.run`
        self.validation = None
        #: which of the previous and the trained model a fine-tuning delivers
        #: (:class:`~napari_unet.core.training.keep.RoundChoice`, set at the end of its run)
        self.kept = None
        self.budget.start()

    # -- the clock of the budget: wall time by default ------------------------------------------
    @property
    def elapsed(self) -> float:
        """Seconds the run has spent (pauses excluded)."""
        return self.budget.elapsed

    @elapsed.setter
    def elapsed(self, seconds: float) -> None:
        self.budget.elapsed = float(seconds)

    @property
    def clock(self):
        """The clock of the time budget (seconds); e.g. a CPU-time clock for measurements on
        a shared machine."""
        return self.budget.clock

    @clock.setter
    def clock(self, clock) -> None:
        self.budget.clock = clock

    # -- setting up -------------------------------------------------------------------------
    def _check_ndim(self) -> None:
        """The pairs' spatial ndim is the config's (the model's): one code path for 2D and 3D."""
        cfg = self.config
        got = self.pairs[0].ndim
        if got != cfg.ndim:
            raise ValueError(
                f"pairs: the training data are {got}D (shape {self.pairs[0].shape}) but "
                f"config.ndim is {cfg.ndim}; make the pairs with ndim={cfg.ndim} "
                f"(TrainingPair(..., ndim={cfg.ndim})) or train with TrainConfig(ndim={got})"
            )
        #: spatial dimensions (2 or 3): the model's
        self.ndim = cfg.ndim
        spacings = {p.spacing for p in self.pairs if p.spacing is not None}
        #: voxel size per axis (border weights, elastic displacements, 3D pooling) or None
        self.spacing = cfg.spacing if cfg.spacing is not None else (
            spacings.pop() if len(spacings) == 1 else None)

    def _setup_processes(self) -> None:
        """The device, and the process group under torchrun."""
        if ddp.dist_env().is_distributed:
            _, self.device = ddp.init_distributed(device=self.config.device)
        else:
            self.device = pick_device(self.config.device)
        self.world_size, self.rank = ddp.get_world_size(), ddp.get_rank()
        #: rank 0 (or the only process): validates, writes checkpoints, reports progress
        self.is_main = self.rank == 0

    def _build_model(self, init_model, resume):
        """``self.model``: new, fine-tuned from ``init_model`` or resumed; returns the resumed
        run's state (to restore once the optimiser exists) or None."""
        model, meta, resume_state = load_source(init_model, resume)
        self._resolve_target(model, meta)
        #: (model, metadata) a fine-tuning started from: at the end of the run the better of
        #: it and the trained model is kept (:mod:`.keep`); None for a new or resumed run
        self.previous = (model, meta) if model is not None and resume is None else None
        #: the post-processing the model delivers with: a continued model's own until the
        #: run chooses one on its validation band (a run without the time or the band for the
        #: choice keeps it, not the defaults: the test-time augmentation and the confident
        #: cores included)
        self.postprocess = (meta or {}).get("postprocess") or None
        if model is not None:
            self.config = adopt_architecture(self.config, model, ndim=self.ndim,
                                             source="resume" if resume is not None
                                             else "init_model")
            self._plan(model.config)  # tile, rate, batch, memory: before the copy
            self.model = copy.deepcopy(model)
            self.normalization = dict(meta.get("normalization") or self.normalization)
            if resume is not None:
                self.history = list(meta.get("history") or [])
        else:
            arch = new_architecture(self.config, channels=self.pairs[0].channels,
                                    spacing=self.spacing)
            self._plan(None)  # tile, rate, batch, memory: before a single weight is allocated
            self.model = UNet(**arch)
            if arch["in_channels"] == 1:
                self.normalization = polarity_normalization(self.normalization, self.pairs)
        if self.model.in_channels != self.pairs[0].channels:
            raise ValueError(
                f"pairs: the images have {self.pairs[0].channels} channel(s) but the model "
                f"takes {self.model.in_channels}"
            )
        return resume_state

    def _resolve_target(self, model, meta) -> None:
        """``self.target``, the run's kind of target ("objects" or "tissue"), set in the config
        too: as chosen, a continued model's own, or recognised from the annotations
        (:func:`napari_unet.core.targets.recognise_target`); the tissue target has 3 classes."""
        from napari_unet.core.targets.tissue import TISSUE_CONTACT, recognise_target

        cfg, kind = self.config, self.config.target
        #: why the run trains its kind of target (one phrase, for the user)
        self.target_reason = "chosen"
        if kind == "auto" and model is not None:
            kind = (meta or {}).get("target", "objects")
            self.target_reason = "the continued model's"
        elif kind == "auto":
            kind, share = recognise_target((p.labels, p.counted()) for p in self.pairs)
            self.target_reason = (f"{100 * share:.0f} % of the annotated cells' outline touches "
                                  f"another cell; tissue from {100 * TISSUE_CONTACT:.0f} %")
            logger.info("target %s: %s", kind, self.target_reason)
        classes = 3 if kind == "tissue" else cfg.num_classes
        if kind == "tissue" and model is not None and model.num_classes != 3:
            raise ValueError(
                f"target: the tissue target needs a model of 3 classes (background, cell, "
                f"wall), the model continued has {model.num_classes}; train a new model, or "
                "give target objects")
        #: the kind of target the run trains: "objects" (the paper's) or "tissue"
        self.target = kind
        self.config = dataclasses.replace(cfg, target=kind, num_classes=classes)

    def _plan(self, architecture) -> None:
        """The planned rate, batch and tile (:func:`napari_unet.core.training.plan.plan`: the
        batch rule and the memory check included) of this config, data, device and processes."""
        data = DataSummary(tuple(p.shape for p in self.pairs), self.pairs[0].channels,
                           self.spacing)
        planned = plan(self.config, data, device=self.device, processes=self.world_size,
                       architecture=architecture)
        self.lr, self.batch_size = float(planned.config.lr), int(planned.config.batch_size)
        #: the network's input tile, one side per axis
        self.tile_shape = planned.tile_shape
        #: the tile as stored since the first release: an int for a 2D square, else the shape
        self.tile = planned.tile

    def _setup_optimizer(self) -> None:
        """Move the model to the device; DDP wrapper, optimiser and AMP scaler."""
        self.model.to(self.device)
        self.amp = self.device.type == "cuda"
        #: bfloat16 autocast of the forward pass on a CPU that computes bf16 natively
        self.bf16 = use_cpu_bf16(self.config.cpu_bf16, self.device)
        #: channels-last network and inputs (:func:`napari_unet.core.device.use_channels_last`:
        #: CUDA in 2D; on one CPU process a 2D network in float32 and every 3D network)
        self.channels_last = use_channels_last(self.config.cpu_channels_last, self.device,
                                               ndim=self.ndim, bf16=self.bf16,
                                               processes=self.world_size)
        #: the layout of the network's weights and inputs
        self.memory_format = (torch.contiguous_format if not self.channels_last else
                              torch.channels_last_3d if self.ndim == 3 else torch.channels_last)
        # explicitly: a model loaded for --init may come channels-last
        self.model.to(memory_format=self.memory_format)
        #: what the training step calls: the model, in DistributedDataParallel under torchrun
        self.net = ddp.wrap_ddp(self.model)
        self.optimizer = make_optimizer(self.preset, self.model.parameters(), lr=self.lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
