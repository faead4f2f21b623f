"""The training engine: a generator of progress events that the GUI and the command line drive.

>>> import numpy as np
>>> from napari_unet.core.synthetic import synthetic_cells
>>> image, labels = synthetic_cells((64, 64), radius=8, seed=0)
>>> cfg = TrainConfig(steps=2, depth=1, base_channels=4, tile=None, validate_every=0,
...                   val_fraction=0.0, device="cpu")
>>> trainer = Trainer([(image, labels)], cfg)
>>> [e.kind for e in trainer.run()]
['step', 'step', 'done']

Each step: draw patches (centred on annotated pixels, mirror-padded), move them to the device,
augment every sample there (:mod:`napari_unet.core.augment`), forward, the weighted soft-max
cross-entropy over the output region (:mod:`napari_unet.core.training.loss`), backward, optimiser step.
Targets and weight maps are derived per sample from the augmented (warped) instance labels, so
a warped cell never bridges a separation border (:func:`napari_unet.core.training.data.targets_from_instances`);
the class balance ``w_c`` is the image's, computed once before the first step.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the trainer joins the process
group (:mod:`napari_unet.core.training.distributed`: NCCL and ``cuda:LOCAL_RANK`` on CUDA, gloo on the
CPU) and trains the model wrapped in DistributedDataParallel. ``batch_size`` is then the global
batch: every rank draws and augments the whole batch with the same seeded generators and trains
on its own block, and the loss is the global weighted mean, so the weights equal those of one
process with the same batch (drop-out aside). Rank 0 alone validates and writes checkpoints;
it decides when to stop (stop request, time budget) and broadcasts that before every step.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

import napari_unet.core.training.checkpoint as ckpt
import napari_unet.core.training.distributed as ddp
from napari_unet.core.augment.pipeline import augment_batch
from napari_unet.core.checks import check_training_pairs
from napari_unet.core.device import configure_cpu_threads, pick_device, use_cpu_bf16
from napari_unet.core.io.model_file import default_class_names, save_model
from napari_unet.core.io.pretrained import load_pretrained
from napari_unet.core.model.unet import (
    UNet,
    anisotropic_pool,
)
from napari_unet.core.normalize import normalized_median, polarity_cut
from napari_unet.core.training.config import TrainConfig
from napari_unet.core.training.data import as_training_pairs, prepare_pairs, targets_from_instances
from napari_unet.core.training.loss import weighted_cross_entropy
from napari_unet.core.training.patches import PatchSampler, split_validation
from napari_unet.core.training.plan import DataSummary, plan
from napari_unet.core.training.presets import get_preset, lr_factor, make_optimizer
from napari_unet.core.training.validation import (
    choice_cost,
    choice_regions,
    choose_postprocess,
    region_area,
    validate,
)

__all__ = ["TrainEvent", "Trainer"]

logger = logging.getLogger(__name__)

#: at most this share of a time budget is kept for choosing the post-processing at the end of
#: a run; where the choice over every validation region would take longer, it looks at an
#: evenly spread subset of them that fits (:func:`~napari_unet.core.training.validation.choice_regions`).
#: On the 80 DSB2018 training images the whole choice takes about 70 s, under 10 % of 15 min.
CHOICE_SHARE = 0.25


@dataclasses.dataclass
class TrainEvent:
    """One progress report of :meth:`Trainer.run`."""

    kind: str  # "step" | "validation" | "checkpoint" | "paused" | "done" | "stopped"
    step: int
    total_steps: int | None
    loss: float | None = None
    lr: float | None = None
    steps_per_s: float | None = None
    eta_s: float | None = None
    metrics: dict | None = None
    message: str = ""


class Trainer:
    """Trains a U-Net on image/label pairs; :meth:`run` is a generator of :class:`TrainEvent`.

    Parameters
    ----------
    pairs : list of TrainingPair or (image, labels[, annotated]) tuples
    config : TrainConfig, optional
    init_model : path or (UNet, metadata), optional
        Fine-tune this model (its architecture and normalisation replace the config's): a
        napari-unet ``.safetensors`` file or a plain PyTorch ``.pt``/``.pth`` state dict (loaded
        with ``weights_only=True``, :func:`napari_unet.core.io.load_pretrained`).
    resume : path, optional
        A checkpoint's model file (``last.safetensors``) or its folder: continues that run
        (weights, optimiser, step, elapsed time, RNG states of the step boundary, history), bit
        for bit as if it had not stopped.

    A resumed or fine-tuned model keeps its architecture: where ``config`` says another depth,
    base channels or classes, :attr:`config` is updated to the model's with a warning, so the
    saved metadata records what was trained (the command line refuses such flags instead).
    Before anything is allocated the pairs are checked (:mod:`napari_unet.core.checks`) and the
    memory of the run is estimated (:func:`napari_unet.core.model.check_memory`): ValueError
    with a smaller setting when it would not fit.

    Under ``torchrun`` (see the module docstring) ``config.batch_size`` is the global batch and
    must be a multiple of the number of processes; :attr:`is_main` is True on rank 0 only.
    """

    def __init__(self, pairs, config: TrainConfig | None = None, *, init_model=None, resume=None):
        self.config = config = TrainConfig() if config is None else config
        self.pairs = as_training_pairs(pairs)
        self._check_ndim()
        check_training_pairs(self.pairs)
        self._setup_processes()
        self.preset = get_preset(config.preset)
        torch.manual_seed(config.seed)
        self.normalization = dict(config.normalization)
        self.history: list[dict] = []
        self.step, self.elapsed, self.best = 0, 0.0, math.inf
        #: a new network (not fine-tuned, not resumed, not pre-trained yet): the 2D
        #: pre-training may start it
        self._fresh = init_model is None and resume is None
        resume_state = self._build_model(init_model, resume)
        self._setup_optimizer()
        #: output shape of one input tile, one side per spatial axis
        self.out_shape = tuple(self.model.output_shape(self.tile_shape))
        #: the output side (an int in 2D, the per-axis shape in 3D), as :attr:`tile`
        self.out_tile = self.out_shape[0] if self.ndim == 2 else self.out_shape
        self.rng = np.random.default_rng(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        if resume_state is not None:
            ckpt.restore_trainer(self, *resume_state)
        #: the clock of the time budget (seconds); wall time by default, e.g. a CPU-time clock
        #: for measurements on a shared machine
        self.clock = time.perf_counter
        self._boundary = None  # RNG states at the start of the step under way
        self._start_clock()
        self._reset_timings()
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()

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
        resume_state = None
        if resume is not None:
            resume = Path(resume)
            if resume.is_dir():
                resume = resume / "last.safetensors"
            init_model = resume
            resume_state = ckpt.load_state(ckpt.state_path(resume))
        if init_model is not None:
            if isinstance(init_model, str | Path):
                model, meta = load_pretrained(init_model)  # checks the file's architecture
            else:
                model, meta = init_model
            self._adopt_architecture(model, "resume" if resume is not None else "init_model")
            self._plan(model.config)  # tile, rate, batch, memory: before the copy
            self.model = copy.deepcopy(model)
            self.normalization = dict(meta.get("normalization") or self.normalization)
            if resume is not None:
                self.history = list(meta.get("history") or [])
        else:
            cfg = self.config
            arch = dict(in_channels=self.pairs[0].channels, num_classes=cfg.num_classes,
                        depth=cfg.depth, base_channels=cfg.base_channels, dropout=cfg.dropout)
            pool = None
            if self.ndim == 3:  # the 3D U-Net: anisotropic pooling from the voxel size
                pool = anisotropic_pool(self.spacing, cfg.depth) if self.spacing else None
                arch.update(ndim=3, pool=pool)
            if cfg.norm is not None:
                arch["norm"] = cfg.norm
            self._plan(None)  # tile, rate, batch, memory: before a single weight is allocated
            self.model = UNet(**arch)
            if arch["in_channels"] == 1 and "invert" not in self.normalization:
                # bright-background images (brightfield, H&E in gray) inverted, in training
                # and wherever the metadata is applied (core.normalize.inverted_channels), at the
                # cut farthest from every training image's median (core.normalize.polarity_cut)
                self.normalization["invert"] = polarity_cut([
                    normalized_median(p.image, low=self.normalization.get("low", 1.0),
                                      high=self.normalization.get("high", 99.8),
                                      channel_axis=p.channel_axis)[0] for p in self.pairs])
        if self.model.in_channels != self.pairs[0].channels:
            raise ValueError(
                f"pairs: the images have {self.pairs[0].channels} channel(s) but the model "
                f"takes {self.model.in_channels}"
            )
        return resume_state

    def _adopt_architecture(self, model: UNet, source: str) -> None:
        """A resumed or fine-tuned model keeps its architecture: the config follows it (with a
        warning where the config said otherwise), so the metadata records what was trained."""
        if model.ndim != self.ndim:
            raise ValueError(
                f"{source}: the model is a {model.ndim}D U-Net but the training data are "
                f"{self.ndim}D; continue a {model.ndim}D model on {model.ndim}D data "
                f"(ndim={model.ndim}), or train a new {self.ndim}D model without {source}"
            )
        fields = {"depth": model.depth, "base_channels": model.base_channels,
                  "num_classes": model.num_classes, "norm": model.config.get("norm")}
        differ = {k: (getattr(self.config, k), v) for k, v in fields.items()
                  if getattr(self.config, k) != v}
        if differ:
            logger.warning("%s: using the model's architecture (%s)", source, ", ".join(
                f"{k} {v} instead of {c}" for k, (c, v) in differ.items()))
            self.config = dataclasses.replace(self.config, **fields)

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
        #: channels-last tensors: CUDA (mixed precision), and a 2D network trained in float32
        #: on one CPU process (1.15x a step of the CPU recipe; with bfloat16 autocast the
        #: contiguous layout was faster, and 3D convolutions are left contiguous)
        self.channels_last = self.amp or (
            self.device.type == "cpu" and not self.bf16 and self.ndim == 2
            and self.world_size == 1)
        if self.ndim == 2:  # explicitly: a model loaded for --init may come channels-last
            self.model.to(memory_format=torch.channels_last if self.channels_last
                          else torch.contiguous_format)
        #: what the training step calls: the model, in DistributedDataParallel under torchrun
        self.net = ddp.wrap_ddp(self.model)
        self.optimizer = make_optimizer(self.preset, self.model.parameters(), lr=self.lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    # -- control (thread-safe; take effect at the next step) ---------------------------------
    def request_stop(self) -> None:
        self._stop.set()
        self._running.set()

    def request_pause(self) -> None:
        self._running.clear()

    def request_resume(self) -> None:
        self._running.set()

    # -- state ---------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        training = self.config.to_dict()
        training.update(lr=self.lr, batch_size=self.batch_size,
                        tile=self.tile if self.ndim == 2 else list(self.tile_shape),
                        ndim=self.ndim, spacing=None if self.spacing is None else list(self.spacing),
                        step=self.step,
                        elapsed_s=round(self.elapsed, 3), device=str(self.device),
                        bf16=self.bf16)
        return {
            "normalization": self.normalization,
            "class_names": default_class_names(self.model.num_classes),
            "training": training,
            "history": self.history,
            **({"postprocess": self.postprocess} if getattr(self, "postprocess", None) else {}),
        }

    def snapshot(self) -> tuple[UNet, dict[str, Any]]:
        """A CPU copy of the model in eval mode and its metadata (safe to use while training)."""
        model = copy.deepcopy(self.model).to("cpu", memory_format=torch.contiguous_format)
        return model.eval(), copy.deepcopy(self.metadata())

    def save(self, path) -> Path:
        """Write the current model as a model file (for prediction)."""
        model, meta = self.snapshot()
        return save_model(model, path, **meta)

    def save_checkpoint(self, name: str = "last") -> Path | None:
        """Write ``<checkpoint_dir>/<name>.safetensors`` and its state file; None without a
        dir, and on ranks other than 0."""
        if self.config.checkpoint_dir is None or not self.is_main:
            return None
        path = Path(self.config.checkpoint_dir) / f"{name}.safetensors"
        self.save(path)
        ckpt.save_trainer_state(self, path)
        return path

    # -- the loop ------------------------------------------------------------------------------
    def _progress(self) -> float:
        parts = []
        if self.config.steps:
            parts.append(self.step / self.config.steps)
        if self.config.time_limit:
            parts.append(self.elapsed / self.config.time_limit)
        return max(parts) if parts else 1.0

    def _budget_spent(self) -> bool:
        """Rank 0 decides (its clock), every rank follows: no step that would end past it."""
        spent = not self._budget_left(self._step_s + self._reserve()) if self.is_main else False
        if self.world_size > 1:
            spent, _ = ddp.broadcast_control(spent, self.elapsed)
        return spent

    def _choice_s(self) -> float:
        """Seconds of the end-of-run choice of the post-processing over every validation
        region (a validation's prediction per pass it predicts and a validation's scoring per
        setting it scores, over the regions with their context:
        :func:`~napari_unet.core.training.validation.choice_cost`), from the last validation's timings
        or, before the first, the early estimate of :meth:`_estimate_validation`."""
        passes, scorings = self._choice_cost
        timings = self._val_timings or {"predict_s": self._val_s, "score_s": 0.0}
        return timings["predict_s"] * passes + timings["score_s"] * scorings

    def _reserve(self) -> float:
        """Seconds kept for choosing the post-processing at the end, so that the run, that
        choice included, ends within the wall-clock budget: :meth:`_choice_s`, at most
        :data:`CHOICE_SHARE` of the budget."""
        if not getattr(self, "_validating", False):
            return 0.0
        full = self._choice_s()
        if self.config.time_limit is None:
            return full
        return min(full, CHOICE_SHARE * self.config.time_limit)

    def _choice_regions(self, prepared, regions) -> list:
        """The validation regions the end-of-run choice looks at: all of them where the time
        left allows, else an evenly spread subset that fits in it (none where not even one
        region fits: the default post-processing stays)."""
        full = self._choice_s()
        if self.config.time_limit is None or full <= 0:
            return list(regions)
        self._tick()
        left = max(self.config.time_limit - self.elapsed, 0.0)
        chosen = choice_regions(prepared, regions, share=left / full)
        if len(chosen) < len(regions):
            logger.info("time limit: %.1f s left for choosing the post-processing, which takes "
                        "about %.1f s over all %d validation regions: choosing on %d of them",
                        left, full, len(regions), len(chosen))
        return chosen

    def _estimate_validation(self, prepared, regions) -> None:
        """Time a validation of the first scorable region and scale it to all regions by
        area: the estimate of a validation's (and so of the end-of-run choice's) seconds
        until the first validation measures them, so that neither starts past the budget.
        Before the first step it is an upper estimate (the untrained network's noisy
        probabilities are several times slower to post-process); a run that ends without a
        validation times it again with the trained network before the choice, which then
        looks at as many regions as truly fit."""
        probe = next((r for r in regions if prepared[r.index].annotated[r.region].any()), None)
        if probe is None:
            return
        timings: dict = {}
        t0 = self.clock()
        validate(self.model, prepared, [probe], tile=self.tile_shape, timings=timings)
        scale = sum(region_area(r.region) for r in regions) / max(region_area(probe.region), 1)
        self._probe_s = max(self.clock() - t0, 0.0)  # what timing it again costs
        self._val_s = self._probe_s * scale
        self._val_timings = {k: v * scale for k, v in timings.items()}
        # an upper estimate (the untrained network's probabilities are slower to score)
        logger.debug("a validation will take at most about %.1f s, choosing the "
                     "post-processing %.1f s (estimated on 1 of %d validation regions)",
                     self._val_s, self._choice_s(), len(regions))

    def _budget_left(self, next_step_s: float = 0.0) -> bool:
        if self.config.steps is not None and self.step >= self.config.steps:
            return False
        if self.config.time_limit is None:
            return True
        return self.elapsed < self.config.time_limit and self._fits(next_step_s)

    def _eta(self, rate: float) -> float | None:
        etas = []
        if self.config.steps is not None and rate > 0:
            etas.append((self.config.steps - self.step) / rate)
        if self.config.time_limit is not None:
            etas.append(max(self.config.time_limit - self.elapsed, 0.0))
        return min(etas) if etas else None

    def training_batch(self, sampler: PatchSampler):
        """One augmented batch on the device: image ``(n, C, *T)``, target and weights of the
        output region ``(n, *t)`` (this rank's block under torchrun); 2D or 3D."""
        # the global batch, the same on all ranks
        img, inst, counted, cw = sampler.sample_instances(self.batch_size)
        dev, nb = self.device, self.device.type == "cuda"
        img = torch.from_numpy(img).to(dev, non_blocking=nb)
        inst = torch.from_numpy(inst).to(dev, non_blocking=nb)
        counted = torch.from_numpy(counted).to(dev, non_blocking=nb)
        # the labels are warped with a context around the output region, so that the border
        # term of its pixels sees the cells beyond it (negligible past d1 + d2 = 5.26 sigma)
        space = self.spacing or (1.0,) * self.ndim
        ctx = [min(math.ceil(5.26 * self.config.sigma / s) + 1, (t - o) // 2)
               for s, t, o in zip(space, self.tile_shape, self.out_shape, strict=True)]
        sides = tuple(o + 2 * c for o, c in zip(self.out_shape, ctx, strict=True))
        img, inst, counted = augment_batch(img, inst, counted, config=self.config.augment,
                                           generator=self.generator, out_shape=sides,
                                           spacing=self.spacing)
        if self.world_size > 1:  # this rank's block of the augmented global batch
            img, inst, counted, cw = (ddp.shard(img), ddp.shard(inst), ddp.shard(counted),
                                      ddp.shard(cw))
        # targets and weights from the WARPED instances: no warped cell bridges a border
        inst, counted = inst.cpu().numpy(), counted.cpu().numpy() > 0
        crop = (slice(None), *(slice(c, c + o) for c, o in zip(ctx, self.out_shape, strict=True)))
        tgt, wts = [], []
        for i in range(len(inst)):
            t, w = targets_from_instances(inst[i], counted[i], class_weight=cw[i],
                                          num_classes=self.model.num_classes,
                                          w0=self.config.w0, sigma=self.config.sigma,
                                          spacing=self.spacing)
            tgt.append(t)
            wts.append(w)
        tgt = torch.from_numpy(np.stack(tgt)[crop].astype(np.int64)).to(dev, non_blocking=nb)
        wts = torch.from_numpy(np.ascontiguousarray(np.stack(wts)[crop])).to(dev, non_blocking=nb)
        return img, tgt, wts

    def make_sampler(self) -> PatchSampler:
        """The patch sampler of :meth:`run` (no validation band held out)."""
        prepared = prepare_pairs(
            self.pairs, pad=max(self.tile_shape) // 2 + 1, cover=self.tile_shape,
            normalization=self.normalization, num_classes=self.model.num_classes,
            w0=self.config.w0, sigma=self.config.sigma, spacing=self.spacing,
        )
        return PatchSampler(prepared, tile=self.tile_shape, rng=self.rng)

    def train_step(self, sampler: PatchSampler) -> tuple[float, float]:
        """One optimisation step; returns (loss, learning rate)."""
        lr = self.lr * lr_factor(self.preset, self._progress())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        img, tgt, wts = self.training_batch(sampler)
        dev = self.device
        if self.channels_last:
            img = img.contiguous(memory_format=torch.channels_last)
        self.net.train()
        if self.bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = self.net(img)
        else:
            with torch.autocast(dev.type, dtype=torch.float16, enabled=self.amp):
                logits = self.net(img)
        # Σ w·ce / Σ w over the global batch (times world size: DDP averages the gradients)
        loss = ddp.global_loss(*weighted_cross_entropy(logits, tgt, wts, reduction="sum"))
        value = ddp.all_reduce_mean(loss.detach())  # the global loss, the same on every rank
        if not math.isfinite(value):
            raise FloatingPointError(
                f"the loss became {value} at step {self.step + 1}; lower the learning rate "
                f"(now {lr:g}) or check the images"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return value, lr

    def run(self) -> Iterator[TrainEvent]:
        """Train until a budget is spent or a stop is requested, yielding progress events.

        A stop (:meth:`request_stop`, or closing the generator) takes effect at the next step and
        saves the ``last`` checkpoint; so does an exception, which is then re-raised.
        """
        cfg = self.config
        self._start_clock()
        prepared, regions, sampler = self._prepare()
        validating = self._validating = bool(regions) and self.is_main
        self._choice_cost = choice_cost(self.model, prepared, regions)
        self._reset_timings()
        every_ckpt = cfg.checkpoint_every or cfg.validate_every or 0
        self._rate, self._last_loss = 0.0, None
        threads_before = torch.get_num_threads()
        if self.device.type == "cpu":
            configure_cpu_threads(cfg.threads)
        try:
            if validating and cfg.time_limit is not None:
                self._estimate_validation(prepared, regions)
            if self._pretrain_due():
                yield from self._pretrain_2d(prepared)
            while True:
                # under torchrun only rank 0's requests count; the others wait in the broadcast
                if self.is_main and not self._running.is_set() and not self._stop.is_set():
                    yield from self._pause()
                    continue
                # rank 0's stop decision and clock on every rank: all stop at the same step
                self._tick()
                stop, self.elapsed = ddp.broadcast_control(
                    self.is_main and self._stop.is_set(), self.elapsed)
                if stop:
                    path = self.save_checkpoint()
                    yield self._event("stopped", message=self._saved(path))
                    return
                if self._budget_spent():
                    break
                yield self._step_event(sampler)
                if (validating and self.step % cfg.validate_every == 0
                        and self._fits(self._val_s + self._reserve())):
                    yield self._validation_event(prepared, regions, cfg.steps)
                if every_ckpt and self.step % every_ckpt == 0:
                    path = self.save_checkpoint()
                    if path is not None:
                        yield self._event("checkpoint", message=str(path))
            if validating and (self.step % cfg.validate_every or not self.step) and self._fits(
                self._val_s + self._reserve()
            ):
                yield self._validation_event(prepared, regions, cfg.steps)
            if validating and self.step:
                # threshold etc. for predict, the GUI and exports (metadata); its time is
                # reserved in the budget (_reserve)
                if (not self._val_measured and cfg.time_limit is not None
                        and self._fits(self._probe_s)):
                    self._estimate_validation(prepared, regions)
                chosen = self._choice_regions(prepared, regions)
                if chosen:
                    self.postprocess = choose_postprocess(self.model, prepared, chosen,
                                                          tile=self.tile_shape)
                else:
                    logger.warning("the time limit left no time to choose the post-processing "
                                   "on the validation band; the model keeps the defaults "
                                   "(give a larger --time-limit)")
                self._tick()  # the choice counts in the elapsed time the model records
            if self.step == 0:
                logger.warning("the time limit (%.3g s) was spent before the first step (preparing "
                               "the targets took %.3g s); give a larger --time-limit",
                               cfg.time_limit, self.elapsed)
            path = self.save_checkpoint()
            yield self._event("done", steps_per_s=self._rate, eta_s=0.0, message=self._saved(path))
        except GeneratorExit:
            self.save_checkpoint()
            raise
        except BaseException:
            path = self.save_checkpoint()
            logger.error("training failed at step %d; %s", self.step, self._saved(path))
            raise
        finally:
            torch.set_num_threads(threads_before)

    def _prepare(self):
        """Targets and weight maps of every pair, the validation regions and the sampler."""
        cfg = self.config
        prepared = prepare_pairs(
            self.pairs, pad=max(self.tile_shape) // 2 + 1, cover=self.tile_shape,
            normalization=self.normalization, num_classes=self.model.num_classes,
            w0=cfg.w0, sigma=cfg.sigma, spacing=self.spacing,
        )
        regions = split_validation(prepared, fraction=cfg.val_fraction) if cfg.validate_every else []
        sampler = PatchSampler(prepared, tile=self.tile_shape, rng=self.rng)
        logger.info("training on %s: tile %s -> %s, batch %d, %s preset%s%s", self.device,
                    self.tile, self.out_tile, self.batch_size, cfg.preset,
                    ", bfloat16 autocast" if self.bf16 else "",
                    f", rank {self.rank} of {self.world_size}" if self.world_size > 1 else "")
        return prepared, regions, sampler

    def _pretrain_due(self) -> bool:
        cfg = self.config
        due = cfg.pretrain_2d > 0 and self.ndim == 3 and self._fresh and self.world_size == 1
        if cfg.pretrain_2d > 0 and self.ndim == 3 and not due:
            logger.info("no 2D pre-training (%s)", "under torchrun" if self.world_size > 1
                        else "the network is fine-tuned or resumed")
        return due

    def _pretrain_2d(self, prepared) -> Iterator[TrainEvent]:
        """Train the same network in 2D on the xy-planes that carry weight (the annotated
        slices, validation held out), for ``pretrain_2d`` of the budget, then start the 3D
        U-Net from its inflated weights (:func:`~napari_unet.core.model.inflate_to_3d`). The 2D
        steps are reported as step events of step 0 (the 3D run has not stepped yet) with the
        message "2D pre-training"; pause and stop act on them as on 3D steps."""
        from napari_unet.core.model.unet import inflate_to_3d
        from napari_unet.core.training.data import TrainingPair, to_channels_first

        cfg = self.config
        planes, self._pretrain_planes = [], []
        for pair, prep in zip(self.pairs, prepared, strict=True):
            p = prep.pad
            counted = prep.weights[tuple(slice(p, p + n) for n in prep.shape)] > 0
            img = to_channels_first(pair.image, pair.channel_axis)
            zs = [int(z) for z in np.flatnonzero(counted.reshape(len(counted), -1).any(axis=1))]
            self._pretrain_planes += zs
            planes += [TrainingPair(img[:, z], pair.labels[z], annotated=counted[z],
                                    channel_axis=0) for z in zs]
        share = cfg.pretrain_2d
        config2d = dataclasses.replace(
            cfg, ndim=2, spacing=None, tile=tuple(self.tile_shape[1:]), pretrain_2d=0.0,
            time_limit=None if cfg.time_limit is None else share * cfg.time_limit,
            validate_every=0, val_fraction=0.0, checkpoint_dir=None, checkpoint_every=None,
            normalization=dict(self.normalization), device=str(self.device))
        trainer2d = Trainer(planes, config2d)
        trainer2d._stop, trainer2d._running = self._stop, self._running  # Stop / Pause act here
        trainer2d.clock = self.clock
        logger.info("2D pre-training on %d annotated plane(s) for %s", len(planes),
                    f"{config2d.time_limit:.0f} s" if config2d.time_limit else
                    f"{config2d.steps} steps")
        try:
            for ev in trainer2d.run():
                if ev.kind == "step":
                    self._tick()
                    self._last_loss = ev.loss
                    yield TrainEvent("step", 0, cfg.steps, ev.loss, ev.lr, ev.steps_per_s,
                                     self._eta(0.0), message=f"2D pre-training, step {ev.step}")
                elif ev.kind == "paused":
                    yield self._event("paused", message=ev.message)
        finally:
            inflated = inflate_to_3d(trainer2d.model.cpu(), pool=self.model.pool_factors)
            self.model.load_state_dict(inflated.state_dict())
            self._fresh = False
            self.history.append({"step": 0, "pretrain_2d_steps": trainer2d.step,
                                 "elapsed_s": round(self.elapsed, 2)})
            logger.info("2D pre-training: %d steps; the 3D U-Net starts from its weights",
                        trainer2d.step)

    def _event(self, kind: str, **fields) -> TrainEvent:
        return TrainEvent(kind, self.step, self.config.steps, self._last_loss, **fields)

    def _pause(self) -> Iterator[TrainEvent]:
        """Report the pause, then wait until resumed or stopped (the wait is not budgeted)."""
        self._tick()
        yield self._event("paused", message="paused")
        while not self._running.wait(timeout=0.5):
            pass
        self._start_clock()

    # -- the wall-clock budget: everything in run() counts except pauses -------------------
    def _reset_timings(self) -> None:
        """Forget the step and validation timings the budget is planned with (a new run)."""
        self._step_s = self._val_s = 0.0  # the last step's and validation's seconds
        self._val_timings: dict = {}  # the last validation's prediction and scoring seconds
        self._val_measured = False  # whether a validation of this run timed all regions
        self._probe_s = 0.0  # what timing one region (_estimate_validation) costs

    def _start_clock(self) -> None:
        """(Re)start the budget's clock: at the start of a run and after a pause (the step
        and validation timings are kept)."""
        self._t0, self._elapsed0 = self.clock(), self.elapsed

    def _tick(self) -> None:
        self.elapsed = self._elapsed0 + (self.clock() - self._t0)

    def _fits(self, seconds: float) -> bool:
        """Whether work of about ``seconds`` ends within the time budget (True without one)."""
        if self.config.time_limit is None:
            return True
        self._tick()
        fits = self.elapsed + seconds <= self.config.time_limit
        if not fits:
            logger.info("time limit: %.1f s left, not starting %.1f s of work",
                        self.config.time_limit - self.elapsed, seconds)
        return fits

    def _step_event(self, sampler: PatchSampler) -> TrainEvent:
        """One optimisation step, its bookkeeping (rate, history) and its event."""
        t0 = self.clock()
        self._boundary = ckpt.rng_states(self)  # what a checkpoint written mid-step records
        loss, lr = self.train_step(sampler)
        self.step += 1
        self._boundary = None
        dt = max(self.clock() - t0, 1e-9)
        self._step_s = dt if self._step_s == 0 else max(dt, 0.9 * self._step_s + 0.1 * dt)
        self._tick()
        self._last_loss = loss
        rate = self._rate
        self._rate = rate = 1.0 / dt if rate == 0 else 0.9 * rate + 0.1 / dt
        if self.step % max(self.config.history_every, 1) == 0 or self.step == 1:
            self.history.append({"step": self.step, "loss": round(loss, 6),
                                 "lr": lr, "elapsed_s": round(self.elapsed, 2)})
        return TrainEvent("step", self.step, self.config.steps, loss, lr, rate, self._eta(rate))

    def _validation_event(self, prepared, regions, total) -> TrainEvent:
        t0 = self.clock()
        self._val_timings = {}
        metrics = validate(self.model, prepared, regions, tile=self.tile_shape,
                           timings=self._val_timings)
        self.history.append({"step": self.step, **{f"val_{k}": v for k, v in metrics.items()}})
        self._val_s = max(self.clock() - t0, 0.0)
        self._val_measured = True
        score = metrics["rand_error"] + 1e-3 * metrics["loss"]
        msg = ""
        if score < self.best:
            self.best = score
            path = self.save_checkpoint("best")
            msg = "" if path is None else f"new best: {path}"
        return TrainEvent("validation", self.step, total, metrics=metrics, message=msg)

    def _saved(self, path) -> str:
        if path is not None:
            return f"saved {path}"
        return "no checkpoint_dir: nothing written" if self.is_main else "rank 0 writes checkpoints"
