"""One training batch: patches drawn, augmented on the device, and their targets and weights
derived from the augmented (warped) instance labels, so a warped cell never bridges a
separation border (:func:`napari_unet.core.training.data.targets_from_instances`); the class
balance ``w_c`` is the image's, computed once before the first step."""

from __future__ import annotations

import math

import numpy as np
import torch

import napari_unet.core.training.distributed as ddp
from napari_unet.core.augment.pipeline import augment_batch
from napari_unet.core.training.data import targets_from_instances
from napari_unet.core.training.patches import PatchSampler

__all__ = ["training_batch"]

#: the border term is negligible past d1 + d2 = 5.26 sigma (w0 exp(-(d1+d2)^2 / 2 sigma^2)
#: below 1e-6 of w0): the labels are warped with that much context around the output region
BORDER_REACH = 5.26


def training_batch(trainer, sampler: PatchSampler):
    """One augmented batch on the trainer's device: image ``(n, C, *T)``, target and weights of
    the output region ``(n, *t)`` (this rank's block under torchrun); 2D or 3D."""
    cfg = trainer.config
    # the global batch, the same on all ranks
    img, inst, counted, cw = sampler.sample_instances(trainer.batch_size)
    dev, nb = trainer.device, trainer.device.type == "cuda"
    img = torch.from_numpy(img).to(dev, non_blocking=nb)
    inst = torch.from_numpy(inst).to(dev, non_blocking=nb)
    counted = torch.from_numpy(counted).to(dev, non_blocking=nb)
    # the labels are warped with a context around the output region, so that the border
    # term of its pixels sees the cells beyond it
    space = trainer.spacing or (1.0,) * trainer.ndim
    ctx = [min(math.ceil(BORDER_REACH * cfg.sigma / s) + 1, (t - o) // 2)
           for s, t, o in zip(space, trainer.tile_shape, trainer.out_shape, strict=True)]
    sides = tuple(o + 2 * c for o, c in zip(trainer.out_shape, ctx, strict=True))
    img, inst, counted = augment_batch(img, inst, counted, config=cfg.augment,
                                       generator=trainer.generator, out_shape=sides,
                                       spacing=trainer.spacing)
    if trainer.world_size > 1:  # this rank's block of the augmented global batch
        img, inst, counted, cw = (ddp.shard(img), ddp.shard(inst), ddp.shard(counted),
                                  ddp.shard(cw))
    inst, counted = inst.cpu().numpy(), counted.cpu().numpy() > 0
    crop = (slice(None), *(slice(c, c + o) for c, o in zip(ctx, trainer.out_shape, strict=True)))
    tgt, wts = [], []
    for i in range(len(inst)):
        t, w = targets_from_instances(inst[i], counted[i], class_weight=cw[i],
                                      num_classes=trainer.model.num_classes, w0=cfg.w0,
                                      sigma=cfg.sigma, spacing=trainer.spacing,
                                      tissue=trainer.target == "tissue")
        tgt.append(t)
        wts.append(w)
    tgt = torch.from_numpy(np.stack(tgt)[crop].astype(np.int64)).to(dev, non_blocking=nb)
    wts = torch.from_numpy(np.ascontiguousarray(np.stack(wts)[crop])).to(dev, non_blocking=nb)
    return img, tgt, wts
