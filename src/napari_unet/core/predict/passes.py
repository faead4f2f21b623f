"""The network's forward passes over batches of tiles: soft-max probabilities, averaged over
the xy plane as it is and turned by 180° (test-time augmentation), and an out-of-memory recovery
that halves the batch, then (:class:`TileTooLarge`) asks for smaller tiles."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch

from napari_unet.core.model.unet import UNet

__all__ = ["TTA_TRANSFORMS", "TileTooLarge", "dihedral", "forward", "forward_safe",
           "prepare_model"]

logger = logging.getLogger(__name__)


class TileTooLarge(Exception):
    """Out of memory with a batch of one tile: retry with smaller tiles."""


#: Test-time augmentation: the indices (:func:`dihedral`) of the plane as it is and turned by
#: 180°, whose probabilities are averaged. A half-turn keeps y and x in place, so any pooling
#: takes it. On the 80 DSB validation images (a 14,000-step model) F1@0.5 mean per image: one
#: pass 0.835, as is + half-turn 0.843, + a flip 0.837, + the transpose 0.839, the 4 turns
#: 0.847, all 8 flips and turns 0.847: most of the gain for twice, not 8 times, the cost of a
#: pass.
TTA_TRANSFORMS: tuple[int, ...] = (0, 2)


def dihedral(x: torch.Tensor, k: int, *, inverse: bool = False) -> torch.Tensor:
    """The k-th of the 8 flips/rotations of the last two axes (or its inverse): the xy plane
    only, also in 3D (z is never flipped into y or x)."""
    rot, flip = k % 4, k >= 4
    if not inverse:
        x = torch.flip(x, dims=(-1,)) if flip else x
        return torch.rot90(x, rot, dims=(-2, -1))
    x = torch.rot90(x, -rot, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def prepare_model(model: UNet, device) -> tuple[torch.device, torch.dtype]:
    """Move ``model`` to ``device`` (None: where it is); its device and dtype."""
    if device is not None:
        from napari_unet.core.device import pick_device

        model.to(pick_device(device))
    param = next(model.parameters())
    return param.device, param.dtype


def forward(model: UNet, x: torch.Tensor, tta: bool, spread: bool = False) -> np.ndarray:
    """Softmax probabilities of a batch (averaged over :data:`TTA_TRANSFORMS` of the xy plane
    if ``tta``); with ``spread`` one more channel: the standard deviation over those passes of
    the foreground probability 1 − P(0) (zeros without ``tta``)."""
    use_amp = x.device.type == "cuda" and x.dtype == torch.float32
    amp = torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()
    total = squares = None
    ks = TTA_TRANSFORMS if tta else (0,)
    for k in ks:
        with amp:
            logits = model(dihedral(x, k))
        prob = torch.softmax(logits.float(), dim=1)
        prob = dihedral(prob, k, inverse=True)
        total = prob if total is None else total + prob
        if spread:
            fg2 = (1.0 - prob[:, :1]) ** 2
            squares = fg2 if squares is None else squares + fg2
    mean = total / len(ks)
    if spread:  # E[fg²] − E[fg]², clipped at 0 against rounding
        var = (squares / len(ks) - (1.0 - mean[:, :1]) ** 2).clamp_min(0.0)
        mean = torch.cat([mean, var.sqrt()], dim=1)
    return mean.cpu().numpy().astype(np.float32, copy=False)


def forward_safe(model: UNet, x: torch.Tensor, tta: bool, state: dict) -> np.ndarray:
    """Forward with out-of-memory recovery: halve the batch (remembered in ``state``, which
    also says whether to add the flips' spread, ``state["spread"]``)."""
    try:
        return forward(model, x, tta, state.get("spread", False))
    except torch.OutOfMemoryError:
        if x.device.type == "cuda":
            torch.cuda.empty_cache()
        if x.shape[0] == 1:
            raise TileTooLarge from None
        half = max(1, x.shape[0] // 2)
        state["batch_size"] = min(state["batch_size"], half)
        logger.warning("out of memory with a batch of %d tiles; retrying with %d", x.shape[0], half)
        return np.concatenate(
            [forward_safe(model, x[i : i + half], tta, state) for i in range(0, len(x), half)]
        )
