"""The paper's loss: pixel-wise soft-max cross-entropy weighted by the weight map.

Computed over the network's output region only (valid convolutions crop the input by
``model.margin`` per side), pixels of weight 0 ignored, normalised by the weight sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["center_crop", "weighted_cross_entropy"]


def center_crop(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Centre crop of the last ``len(size)`` axes to ``size`` (2D or 3D).

    Examples
    --------
    >>> center_crop(torch.zeros(1, 6, 6), (2, 2)).shape
    torch.Size([1, 2, 2])
    """
    have = tuple(x.shape[-len(size):])
    if any(s > h for s, h in zip(size, have, strict=True)):
        raise ValueError(f"size: expected at most {have}, got {tuple(size)}")
    index = tuple(slice((h - s) // 2, (h - s) // 2 + s) for h, s in zip(have, size, strict=True))
    return x[(..., *index)]


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    *,
    reduction: str = "mean",
):
    """Σ w(x)·(−log softmax(logits)[target(x)]) / Σ w(x), over the logits' spatial region.

    Parameters
    ----------
    logits : Tensor (N, K, h, w) or, for volumes, (N, K, d, h, w)
        Network output (computed in float32 here, also under mixed precision).
    target : Tensor (N, H, W) (or (N, D, H, W)) integer, H ≥ h
        Class per pixel; centre-cropped to the output region if larger.
    weights : Tensor (N, H, W) float
        Weight map; centre-cropped like ``target``. Weight-0 pixels do not contribute at all
        (their target may be anything, even out of range).

    reduction : {"mean", "sum"}
        ``"mean"``: the weighted mean. ``"sum"``: the pair ``(Σ w·ce, Σ w)`` instead, for a mean
        over a batch split across processes
        (:func:`napari_unet.core.training.distributed.global_loss`).

    Returns
    -------
    Scalar tensor (0, with a gradient, when all weights are 0), or a pair of scalar tensors.

    Examples
    --------
    >>> logits = torch.zeros(1, 2, 2, 2)
    >>> round(float(weighted_cross_entropy(logits, torch.ones(1, 2, 2, dtype=torch.long),
    ...                                    torch.ones(1, 2, 2))), 4)
    0.6931
    >>> s, n = weighted_cross_entropy(logits, torch.ones(1, 2, 2, dtype=torch.long),
    ...                               torch.ones(1, 2, 2), reduction="sum")
    >>> round(float(s), 4), float(n)
    (2.7726, 4.0)
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
    if logits.ndim not in (4, 5):
        raise ValueError(f"logits: expected (N, K, h, w) or (N, K, d, h, w), got shape "
                         f"{tuple(logits.shape)}")
    size = tuple(logits.shape[2:])
    target = center_crop(target, size).long()
    weights = center_crop(weights, size).float()
    keep = weights > 0
    safe_target = torch.where(keep, target, torch.zeros_like(target))
    ce = F.cross_entropy(logits.float(), safe_target, reduction="none")
    ce = torch.where(keep, ce, torch.zeros_like(ce))
    total = weights.sum()
    if reduction == "sum":
        return (ce * weights).sum(), total
    return (ce * weights).sum() / total.clamp_min(1e-12)
