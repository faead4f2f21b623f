"""The network a run trains: a new U-Net, or the model a run continues (fine-tuned or resumed).

A continued model keeps its architecture: where the settings say another depth, width, classes
or normalisation, the settings follow the model (with a warning), so the metadata records what
was trained. A new single-channel network gets the polarity cut of its training images
(:func:`napari_unet.core.normalize.polarity_cut`): bright-background images are inverted in
training and wherever the model's metadata is applied.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import napari_unet.core.training.checkpoint as ckpt
from napari_unet.core.io.pretrained import load_pretrained
from napari_unet.core.model.shapes import anisotropic_pool
from napari_unet.core.model.unet import UNet
from napari_unet.core.normalize import normalized_median, polarity_cut
from napari_unet.core.training.config import TrainConfig

__all__ = ["adopt_architecture", "load_source", "new_architecture", "polarity_normalization"]

logger = logging.getLogger(__name__)


def load_source(init_model=None, resume=None):
    """``(model, metadata, resume_state)`` of the model a run continues: ``resume`` (a
    checkpoint file or its folder, :func:`napari_unet.core.training.checkpoint.load_checkpoint`:
    its weights and trainer state, complete or refused) or ``init_model`` (a file, read safely,
    or a ``(UNet, metadata)`` pair); ``(None, None, None)`` for a new network."""
    if resume is not None:
        return ckpt.load_checkpoint(resume)
    if init_model is None:
        return None, None, None
    if isinstance(init_model, str | Path):
        model, meta = load_pretrained(init_model)  # checks the file's architecture
    else:
        model, meta = init_model
    return model, meta, None


def adopt_architecture(config: TrainConfig, model: UNet, *, ndim: int, source: str
                       ) -> TrainConfig:
    """``config`` with ``model``'s depth, width, classes and normalisation (a warning where it
    said otherwise); ValueError when the model's ndim is not the data's."""
    if model.ndim != ndim:
        raise ValueError(
            f"{source}: the model is a {model.ndim}D U-Net but the training data are "
            f"{ndim}D; continue a {model.ndim}D model on {model.ndim}D data "
            f"(ndim={model.ndim}), or train a new {ndim}D model without {source}"
        )
    fields = {"depth": model.depth, "base_channels": model.base_channels,
              "num_classes": model.num_classes, "norm": model.config.get("norm")}
    differ = {k: (getattr(config, k), v) for k, v in fields.items() if getattr(config, k) != v}
    if not differ:
        return config
    logger.warning("%s: using the model's architecture (%s)", source, ", ".join(
        f"{k} {v} instead of {c}" for k, (c, v) in differ.items()))
    return dataclasses.replace(config, **fields)


def new_architecture(config: TrainConfig, *, channels: int, spacing) -> dict:
    """The :class:`UNet` arguments of a new network for these settings (3D: pooled along a
    coarse z by the voxel ``spacing``, :func:`napari_unet.core.model.anisotropic_pool`)."""
    arch = dict(in_channels=channels, num_classes=config.num_classes, depth=config.depth,
                base_channels=config.base_channels, dropout=config.dropout)
    if config.ndim == 3:
        pool = anisotropic_pool(spacing, config.depth) if spacing else None
        arch.update(ndim=3, pool=pool)
    if config.norm is not None:
        arch["norm"] = config.norm
    return arch


def polarity_normalization(normalization: dict, pairs) -> dict:
    """``normalization`` with the polarity cut farthest from every training image's median
    (:func:`napari_unet.core.normalize.polarity_cut`), unless it has one."""
    if "invert" in normalization:
        return normalization
    low, high = normalization.get("low", 1.0), normalization.get("high", 99.8)
    medians = [normalized_median(p.image, low=low, high=high, channel_axis=p.channel_axis)[0]
               for p in pairs]
    return {**normalization, "invert": polarity_cut(medians)}
