"""The training loop: a generator of progress events that the GUI and the command line drive.

>>> from napari_unet.core.synthetic import synthetic_cells
>>> from napari_unet.core.training import TrainConfig
>>> image, labels = synthetic_cells((64, 64), radius=8, seed=0)
>>> cfg = TrainConfig(steps=2, depth=1, base_channels=4, tile=None, validate_every=0,
...                   val_fraction=0.0, device="cpu")
>>> trainer = Trainer([(image, labels)], cfg)
>>> [e.kind for e in trainer.run()]
['step', 'step', 'done']

Each step: draw patches (centred on annotated pixels, mirror-padded), move them to the device,
augment every sample there and derive its target and weights from the warped labels
(:mod:`napari_unet.core.training.batch`), forward, the weighted soft-max cross-entropy over the
output region (:mod:`napari_unet.core.training.loss`), backward, optimiser step. The run's
parts live beside it: the budget (:mod:`.budget`), the validations and the end-of-run choice
of the post-processing (:mod:`.schedule`), the checkpoints (:mod:`.checkpoint`), the network
(:mod:`.network`), the 2D pre-training of a 3D U-Net (:mod:`.pretrain`), stop and pause
(:mod:`.control`); every setting was resolved by the plan (:mod:`.plan`).

Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the trainer joins the process
group (:mod:`napari_unet.core.training.distributed`: NCCL and ``cuda:LOCAL_RANK`` on CUDA, gloo
on the CPU) and trains the model wrapped in DistributedDataParallel. ``batch_size`` is then the
global batch: every rank draws and augments the whole batch with the same seeded generators and
trains on its own block, and the loss is the global weighted mean, so the weights equal those of
one process with the same batch (drop-out aside). Rank 0 alone validates and writes checkpoints;
it decides when to stop (stop request, time budget) and broadcasts that before every step.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

import napari_unet.core.training.checkpoint as ckpt
import napari_unet.core.training.distributed as ddp
from napari_unet.core.device import configure_cpu_threads
from napari_unet.core.io.model_file import default_class_names, save_model
from napari_unet.core.model.unet import UNet
from napari_unet.core.training.batch import training_batch
from napari_unet.core.training.cell_size import floor_min_size
from napari_unet.core.training.data import prepare_pairs
from napari_unet.core.training.keep import keep_or_restore
from napari_unet.core.training.loss import weighted_cross_entropy
from napari_unet.core.training.patches import PatchSampler, split_validation
from napari_unet.core.training.presets import lr_factor
from napari_unet.core.training.pretrain import pretrain_2d, pretrain_due
from napari_unet.core.training.schedule import ValidationSchedule
from napari_unet.core.training.setup import TrainerSetup
from napari_unet.errors import is_no_space

__all__ = ["TrainEvent", "Trainer"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainEvent:
    """One progress report of :meth:`Trainer.run`."""

    #: "step" | "validation" | "checkpoint" | "paused" | "kept" | "done" | "stopped"; "kept":
    #: which of the previous and the trained model a fine-tuning delivers (:mod:`.keep`)
    kind: str
    step: int
    total_steps: int | None
    loss: float | None = None
    lr: float | None = None
    steps_per_s: float | None = None
    eta_s: float | None = None
    metrics: dict | None = None
    message: str = ""


class Trainer(TrainerSetup):
    """Trains a U-Net on image/label pairs; :meth:`run` is a generator of :class:`TrainEvent`.

    Parameters
    ----------
    pairs : list of TrainingPair or (image, labels[, annotated]) tuples
    config : TrainConfig, optional
        Planned again here (:func:`napari_unet.core.training.plan`): ``None`` in ``lr``,
        ``batch_size`` and ``tile`` become the preset's and the automatic tile.
    init_model : path or (UNet, metadata), optional
        Fine-tune this model (its architecture and normalisation replace the config's): a
        napari-unet ``.safetensors`` file or a plain PyTorch ``.pt``/``.pth`` state dict (loaded
        with ``weights_only=True``, :func:`napari_unet.core.io.load_pretrained`).
    resume : path, optional
        A checkpoint's model file (``last.safetensors``) or its folder: continues that run
        (weights, optimiser, step, elapsed time, RNG states of the step boundary, history), bit
        for bit as if it had not stopped. A checkpoint of a run on other pairs or settings is
        refused, naming what differs (:func:`~napari_unet.core.training.identity.check_same_run`).
    force_resume : bool
        Resume such a checkpoint anyway (a deliberate continuation on other data).

    A resumed or fine-tuned model keeps its architecture (:mod:`.network`). Before anything is
    allocated the pairs are checked (:mod:`napari_unet.core.checks`) and the plan's memory check
    refuses, with a smaller setting, a run the device cannot hold. Under ``torchrun``
    ``config.batch_size`` is the global batch, a multiple of the number of processes;
    :attr:`is_main` is True on rank 0 only.
    """

    # -- control (thread-safe; take effect at the next step) ---------------------------------
    def request_stop(self) -> None:
        self.control.request_stop()

    def request_pause(self) -> None:
        self.control.request_pause()

    def request_resume(self) -> None:
        self.control.request_resume()

    # -- state -------------------------------------------------------------------------------
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
            "class_names": default_class_names(self.model.num_classes, target=self.target),
            "target": self.target,
            "training": training,
            "history": self.history,
            **({"postprocess": self.postprocess} if self.postprocess else {}),
            **({"kept": self.kept.to_dict()} if self.kept is not None else {}),
        }

    def snapshot(self) -> tuple[UNet, dict[str, Any]]:
        """A CPU copy of the model in eval mode and its metadata (safe to use while training)."""
        model = copy.deepcopy(self.model).to("cpu", memory_format=torch.contiguous_format)
        return model.eval(), copy.deepcopy(self.metadata())

    def save(self, path) -> Path:
        """Write the current model as a model file (for prediction)."""
        model, meta = self.snapshot()
        return save_model(model, path, **ckpt.relative_paths(meta, path))

    def save_checkpoint(self, name: str = "last") -> Path | None:
        """Write ``<checkpoint_dir>/<name>.safetensors`` and its state file; None without a
        dir, and on ranks other than 0."""
        if self.config.checkpoint_dir is None or not self.is_main:
            return None
        path = Path(self.config.checkpoint_dir) / f"{name}.safetensors"
        return ckpt.save_checkpoint(self, path)  # complete or absent, then its model file

    # -- the steps ---------------------------------------------------------------------------
    def prepare(self):
        """Targets and weight maps of every pair, the validation regions and the sampler."""
        cfg = self.config
        prepared = prepare_pairs(
            self.pairs, pad=max(self.tile_shape) // 2 + 1, cover=self.tile_shape,
            normalization=self.normalization, num_classes=self.model.num_classes,
            w0=cfg.w0, sigma=cfg.sigma, spacing=self.spacing,
            tissue=self.target == "tissue",
        )
        regions = split_validation(prepared, fraction=cfg.val_fraction) if cfg.validate_every else []
        sampler = PatchSampler(prepared, tile=self.tile_shape, rng=self.rng)
        logger.info("training on %s: tile %s -> %s, batch %d, %s preset%s%s", self.device,
                    self.tile, self.out_tile, self.batch_size, cfg.preset,
                    ", bfloat16 autocast" if self.bf16 else "",
                    f", rank {self.rank} of {self.world_size}" if self.world_size > 1 else "")
        return prepared, regions, sampler

    def make_sampler(self) -> PatchSampler:
        """The patch sampler of :meth:`run` (no validation band held out)."""
        return PatchSampler(self.prepare()[0], tile=self.tile_shape, rng=self.rng)

    def training_batch(self, sampler: PatchSampler):
        """One augmented batch on the device (:func:`napari_unet.core.training.batch.
        training_batch`)."""
        return training_batch(self, sampler)

    def train_step(self, sampler: PatchSampler) -> tuple[float, float]:
        """One optimisation step; returns (loss, learning rate)."""
        lr = self.lr * lr_factor(self.preset, self.budget.progress(self.step))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        img, tgt, wts = self.training_batch(sampler)
        if self.channels_last:
            img = img.contiguous(memory_format=self.memory_format)
        self.net.train()
        if self.bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = self.net(img)
        else:
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
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

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> Iterator[TrainEvent]:
        """Train until a budget is spent or a stop is requested, yielding progress events.

        A stop (:meth:`request_stop`, or closing the generator) takes effect at the next step and
        saves the ``last`` checkpoint; so does an exception, which is then re-raised.
        """
        self.budget.start()
        prepared, regions, sampler = self.prepare()
        self.validation = ValidationSchedule(
            self.model, prepared, regions, tile=self.tile_shape,
            every=self.config.validate_every, budget=self.budget, enabled=self.is_main,
            tissue=self.target == "tissue",
            compare=self.previous is not None,
            inherit=None if self.previous is None else (self.previous[1] or {}).get("postprocess"))
        self.kept = None
        self.budget.step_s = 0.0  # a new run plans with its own steps' times
        self._rate, self.last_loss = 0.0, None
        threads_before = torch.get_num_threads()
        if self.device.type == "cpu":
            configure_cpu_threads(self.config.threads)
        try:
            if self.validation.enabled and self.config.time_limit is not None:
                self.validation.estimate()
            if pretrain_due(self):
                yield from pretrain_2d(self, prepared)
            if (yield from self._steps(sampler)) == "stopped":
                return
            yield from self._finish(prepared)
        except GeneratorExit:
            self.save_checkpoint()
            raise
        except BaseException as err:
            # a full disk refused the last write: another checkpoint would not fit either
            path = None if is_no_space(err) else self.save_checkpoint()
            logger.error("training failed at step %d; %s", self.step, self._saved(path))
            raise
        finally:
            torch.set_num_threads(threads_before)

    def _steps(self, sampler: PatchSampler) -> Iterator[TrainEvent]:
        """Steps, validations and checkpoints until a budget is spent ("spent") or a stop
        is requested ("stopped", after the last checkpoint)."""
        every_ckpt = self.config.checkpoint_every or self.config.validate_every or 0
        while True:
            # under torchrun only rank 0's requests count; the others wait in the broadcast
            if self.is_main and self.control.paused:
                yield from self._pause()
                continue
            # rank 0's stop decision and clock on every rank: all stop at the same step
            self.budget.tick()
            stop, self.elapsed = ddp.broadcast_control(
                self.is_main and self.control.stopped, self.elapsed)
            if stop:
                path = self.save_checkpoint()
                yield self.event("stopped", message=self._saved(path))
                return "stopped"
            if self._budget_spent():
                return "spent"
            yield self._step_event(sampler)
            if self.validation.due(self.step):
                yield self._validation_event()
            if every_ckpt and self.step % every_ckpt == 0:
                path = self.save_checkpoint()
                if path is not None:
                    yield self.event("checkpoint", message=str(path))

    def _finish(self, prepared) -> Iterator[TrainEvent]:
        """The last validation, the choice of the post-processing (a 3D model of objects: a
        minimum size from its cells, :mod:`.cell_size`), the last checkpoint; for a fine-tuning
        then the better of the previous and the trained model (:mod:`.keep`)."""
        if self.validation.due_at_end(self.step):
            yield self._validation_event()
        chosen = None
        if self.validation.enabled and self.step:
            # threshold etc. for predict, the GUI and exports (metadata); its time is
            # reserved in the budget (ValidationSchedule.reserve)
            chosen = self.validation.choose()
            if chosen is not None:
                self.postprocess = chosen
            self.budget.tick()  # the choice counts in the elapsed time the model records
        if self.ndim == 3 and self.target != "tissue" and self.step:
            # fragments between the annotated planes, which no band shows: dropped by size
            self.postprocess = floor_min_size(self.postprocess, [p.labels for p in prepared],
                                              spacing=self.spacing)
        if self.step == 0:
            logger.warning("the time limit (%.3g s) was spent before the first step (preparing "
                           "the targets took %.3g s); give a larger --time-limit",
                           self.config.time_limit, self.elapsed)
        path = self.save_checkpoint()  # the trained weights: what --resume continues
        if self.previous is not None and self.step and self.is_main:
            # never worse after a round: the better of the previous and the trained model
            self.kept = keep_or_restore(self, chosen)
            self.budget.tick()
            yield self.event("kept", metrics=self.kept.to_dict(), message=self.kept.message)
        yield self.event("done", steps_per_s=self._rate, eta_s=0.0, message=self._saved(path))

    def event(self, kind: str, **fields) -> TrainEvent:
        """An event of ``kind`` at the current step, with the last loss."""
        return TrainEvent(kind, self.step, self.config.steps, self.last_loss, **fields)

    def _pause(self) -> Iterator[TrainEvent]:
        """Report the pause, then wait until resumed or stopped (the wait is not budgeted)."""
        self.budget.tick()
        yield self.event("paused", message="paused")
        self.control.wait_for_resume()
        self.budget.start()

    def _budget_spent(self) -> bool:
        """Rank 0 decides (its clock), every rank follows: no step that would end past it."""
        spent = False
        if self.is_main:
            spent = not self.budget.left(self.step,
                                         self.budget.step_s + self.validation.reserve())
        if self.world_size > 1:
            spent, _ = ddp.broadcast_control(spent, self.elapsed)
        return spent

    def _step_event(self, sampler: PatchSampler) -> TrainEvent:
        """One optimisation step, its bookkeeping (rate, history) and its event."""
        t0 = self.clock()
        self.boundary = ckpt.rng_states(self)  # what a checkpoint written mid-step records
        loss, lr = self.train_step(sampler)
        self.step += 1
        self.boundary = None
        dt = max(self.clock() - t0, 1e-9)
        self.budget.record_step(dt)
        self.budget.tick()
        self.last_loss = loss
        rate = self._rate
        self._rate = rate = 1.0 / dt if rate == 0 else 0.9 * rate + 0.1 / dt
        if self.step % max(self.config.history_every, 1) == 0 or self.step == 1:
            self.history.append({"step": self.step, "loss": round(loss, 6),
                                 "lr": lr, "elapsed_s": round(self.elapsed, 2)})
        return TrainEvent("step", self.step, self.config.steps, loss, lr, rate,
                          self.budget.eta(self.step, rate))

    def _validation_event(self) -> TrainEvent:
        metrics = self.validation.validate()
        self.history.append({"step": self.step, **{f"val_{k}": v for k, v in metrics.items()}})
        score = metrics["rand_error"] + 1e-3 * metrics["loss"]
        msg = ""
        if score < self.best:
            self.best = score
            path = self.save_checkpoint("best")
            msg = "" if path is None else f"new best: {path}"
        return TrainEvent("validation", self.step, self.config.steps, metrics=metrics,
                          message=msg)

    def _saved(self, path) -> str:
        if path is not None:
            return f"saved {path}"
        if self.config.checkpoint_dir is not None and self.is_main:
            return "no checkpoint written (no space left for it)"
        return "no checkpoint_dir: nothing written" if self.is_main else "rank 0 writes checkpoints"
