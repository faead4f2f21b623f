"""The 2D pre-training of a 3D U-Net: the same network trained in 2D on the annotated
xy-planes for a share of the budget (``TrainConfig.pretrain_2d``), whose weights, inflated,
start the 3D U-Net (:func:`napari_unet.core.model.inflate_to_3d`).

On a CPU a 3D U-Net learns slowly from a few annotated slices; the same network first trained
on those planes as images starts the volume from weights that already find cells.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import numpy as np

from napari_unet.core.model.inflate import inflate_to_3d
from napari_unet.core.training.data import TrainingPair, to_channels_first

__all__ = ["annotated_planes", "pretrain_2d", "pretrain_due"]

logger = logging.getLogger(__name__)


def pretrain_due(trainer) -> bool:
    """Whether ``trainer`` pre-trains in 2D: a 3D U-Net from He's initialisation (not
    fine-tuned, not resumed) in one process, with a ``pretrain_2d`` share."""
    cfg = trainer.config
    due = cfg.pretrain_2d > 0 and trainer.ndim == 3 and trainer.fresh and trainer.world_size == 1
    if cfg.pretrain_2d > 0 and trainer.ndim == 3 and not due:
        logger.info("no 2D pre-training (%s)", "under torchrun" if trainer.world_size > 1
                    else "the network is fine-tuned or resumed")
    return due


def annotated_planes(pairs, prepared) -> tuple[list[TrainingPair], list[int]]:
    """The xy-planes of the volumes that carry weight (the annotated slices, validation held
    out) as 2D training pairs, and their z indices."""
    planes, zs_all = [], []
    for pair, prep in zip(pairs, prepared, strict=True):
        p = prep.pad
        counted = prep.weights[tuple(slice(p, p + n) for n in prep.shape)] > 0
        img = to_channels_first(pair.image, pair.channel_axis)
        zs = [int(z) for z in np.flatnonzero(counted.reshape(len(counted), -1).any(axis=1))]
        zs_all += zs
        planes += [TrainingPair(img[:, z], pair.labels[z], annotated=counted[z], channel_axis=0)
                   for z in zs]
    return planes, zs_all


def pretrain_2d(trainer, prepared) -> Iterator:
    """Train ``trainer``'s network in 2D on the annotated planes for ``pretrain_2d`` of the
    budget, then start the 3D U-Net from its inflated weights. The 2D steps are reported as
    step events of step 0 (the 3D run has not stepped yet) with the message "2D pre-training";
    pause and stop act on them as on 3D steps (the same :class:`RunControl`)."""
    cfg = trainer.config
    planes, trainer.pretrain_planes = annotated_planes(trainer.pairs, prepared)
    config2d = dataclasses.replace(
        cfg, ndim=2, spacing=None, tile=tuple(trainer.tile_shape[1:]), pretrain_2d=0.0,
        time_limit=None if cfg.time_limit is None else cfg.pretrain_2d * cfg.time_limit,
        validate_every=0, val_fraction=0.0, checkpoint_dir=None, checkpoint_every=None,
        normalization=dict(trainer.normalization), device=str(trainer.device))
    trainer2d = type(trainer)(planes, config2d)
    trainer2d.control = trainer.control  # Stop / Pause act here
    trainer2d.clock = trainer.clock
    logger.info("2D pre-training on %d annotated plane(s) for %s", len(planes),
                f"{config2d.time_limit:.0f} s" if config2d.time_limit else
                f"{config2d.steps} steps")
    try:
        for ev in trainer2d.run():
            if ev.kind == "step":
                trainer.budget.tick()
                trainer.last_loss = ev.loss
                yield dataclasses.replace(
                    ev, step=0, total_steps=cfg.steps, eta_s=trainer.budget.eta(0, 0.0),
                    message=f"2D pre-training, step {ev.step}")
            elif ev.kind == "paused":
                yield trainer.event("paused", message=ev.message)
    finally:
        inflated = inflate_to_3d(trainer2d.model.cpu(), pool=trainer.model.pool_factors)
        trainer.model.load_state_dict(inflated.state_dict())
        trainer.fresh = False
        trainer.history.append({"step": 0, "pretrain_2d_steps": trainer2d.step,
                                "elapsed_s": round(trainer.elapsed, 2)})
        logger.info("2D pre-training: %d steps; the 3D U-Net starts from its weights",
                    trainer2d.step)
