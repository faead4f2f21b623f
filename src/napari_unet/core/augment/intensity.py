"""Private helpers of :mod:`napari_unet.core.augment`: gray values, dtypes, chunked copies.

On the CPU every operation works on chunks of at most ``block`` elements: below PyTorch's parallel
grain size each runs serially in cache, with no thread-pool barriers (see
:func:`napari_unet.core.augment.resample.warp_batch`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def changes_gray_values(config) -> bool:
    """Whether an ``AugmentConfig`` alters gray values at all (else they are left untouched)."""
    return (config.gamma != (1.0, 1.0) or config.contrast != (1.0, 1.0)
            or config.brightness > 0 or config.noise_std > 0)


def split_chunks(flat: torch.Tensor, block: int | None) -> tuple[torch.Tensor, ...]:
    """Column chunks of ``flat`` (N, L) with at most ``block`` elements each (None: one chunk)."""
    if block is None:
        return (flat,)
    return flat.split(max(1, block // max(flat.shape[0], 1)), dim=1)


def concat(parts: Sequence[torch.Tensor], *, block=None) -> torch.Tensor:
    """``torch.cat(parts)`` along the batch axis, copied in chunks of at most ``block`` elements."""
    first = parts[0]
    out = torch.empty((sum(p.shape[0] for p in parts), *first.shape[1:]), dtype=first.dtype,
                      device=first.device)
    start = 0
    for p in parts:
        dst = out[start:start + p.shape[0]].reshape(p.shape[0], -1)
        src = p.reshape(p.shape[0], -1)
        for d, c in zip(split_chunks(dst, block), split_chunks(src, block), strict=True):
            d.copy_(c)
        start += p.shape[0]
    return out


def gray_values(x: torch.Tensor, config, u: torch.Tensor, noise, *, block=None) -> torch.Tensor:
    """Gamma, contrast, brightness and noise on a float batch (N, C, *S), per sample (in place).

    ``u`` holds (N, 3) uniform draws, ``noise`` standard normal values shaped like ``x`` or None.
    The gray values are rescaled to [0, 1] by the sample's min and max, transformed, and scaled
    back. ``block`` processes at most that many elements per operation (see :func:`warp_batch`).
    """
    n = x.shape[0]

    def log_uniform(pair, col):
        lo, hi = pair
        return torch.exp(math.log(lo) + u[:, col] * (math.log(hi) - math.log(lo)))

    gamma, contrast = log_uniform(config.gamma, 0), log_uniform(config.contrast, 1)
    brightness = (2 * u[:, 2] - 1) * config.brightness
    gamma, contrast, brightness = (
        v.to(device=x.device, dtype=x.dtype).reshape(n, 1) for v in (gamma, contrast, brightness)
    )
    flat = x.reshape(n, -1)
    chunks = split_chunks(flat, block)
    noise_chunks = (None,) * len(chunks)
    if noise is not None:
        noise = noise.to(device=x.device, dtype=x.dtype).reshape(n, -1)
        noise_chunks = split_chunks(noise, block)
    lo = torch.stack([c.amin(dim=1) for c in chunks]).amin(dim=0).reshape(n, 1)
    span = torch.stack([c.amax(dim=1) for c in chunks]).amax(dim=0).reshape(n, 1) - lo
    span = torch.where(span > 0, span, torch.ones_like(span))
    total = torch.zeros((n, 1), dtype=torch.float64, device=x.device)
    for c in chunks:  # to [0, 1], gamma; accumulate the mean
        c.sub_(lo).div_(span).clamp_(0, 1).pow_(gamma)
        total += c.sum(dim=1, keepdim=True, dtype=torch.float64)
    mean = (total / flat.shape[1]).to(x.dtype)
    for c, z in zip(chunks, noise_chunks, strict=True):
        c.sub_(mean).mul_(contrast).add_(mean + brightness)
        if z is not None:
            c.add_(z, alpha=config.noise_std)
        c.mul_(span).add_(lo)
    return flat.reshape(x.shape)


def restore_dtype(x: torch.Tensor, dtype: torch.dtype, *, block=None) -> torch.Tensor:
    """Back to ``dtype``: integers rounded and clipped to their range (never wrapped)."""
    if dtype.is_floating_point:
        return x.to(dtype)
    if dtype == torch.bool:
        return x >= 0.5
    info = torch.iinfo(dtype)
    out = torch.empty(x.shape, dtype=dtype, device=x.device)
    flat = x.reshape(x.shape[0], -1)
    pairs = zip(split_chunks(flat, block), split_chunks(out.view(x.shape[0], -1), block),
                strict=True)
    for c, o in pairs:
        o.copy_(torch.round(c).clamp_(info.min, info.max))
    return out
