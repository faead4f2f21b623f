"""Memory a U-Net needs, estimated from its architecture before anything is allocated.

The estimate is arithmetic on the shapes (no tensor is created): the parameters (and, for
training, their gradients, two optimiser moments and what a checkpoint builds in memory), every
feature map the forward pass keeps for the backward pass, and the gradients in flight. :func:`check_memory` compares it with what
the device has and refuses, naming a smaller setting, before a run could exhaust the machine
(a U-Net of depth 12 asks for tens of GB; a 100000-pixel tile for hundreds).

What the device has: for CUDA the free memory the driver reports; otherwise the available
system memory (``MemAvailable``), capped by a cgroup limit (containers, SLURM jobs). The
environment variable ``NAPARI_UNET_MEMORY_LIMIT`` (bytes, or with a ``K``/``M``/``G`` suffix)
caps it further, e.g. on a shared node.

>>> estimate_training_bytes(in_channels=1, num_classes=2, depth=4, base_channels=64,
...                         tile=572, batch_size=1) // 2**20   # the paper's network, in MiB
2644
>>> count_parameters(in_channels=1, num_classes=2, depth=4, base_channels=64)  # the paper's
31030658
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "available_bytes",
    "check_memory",
    "count_parameters",
    "estimate_inference_bytes",
    "estimate_training_bytes",
    "format_bytes",
]

_FLOAT = 4  # bytes of a float32
_SAFETY = 1.25  # allocator slack, temporaries of the convolutions, augmentation buffers
#: share of the available memory a run may plan to use
_HEADROOM = 0.85
#: floats per weight that writing a checkpoint holds besides the run's own weights,
#: gradients and moments (:func:`napari_unet.core.training.checkpoint.save_checkpoint`): the
#: snapshot's CPU copy of the weights (1), contiguous CPU copies of the two optimiser moments
#: (2), and the file built in memory before its atomic write (weights and moments, 3). For the
#: paper's network (31 M weights) 745 MB. Counted on top of a step: after a failed step the
#: checkpoint is written while the step's feature maps are still held.
_CHECKPOINT_COPIES = 6


def count_parameters(
    *, in_channels: int, num_classes: int, depth: int, base_channels: int, ndim: int = 2
) -> int:
    """Number of weights of :class:`~napari_unet.core.model.UNet` with this architecture.

    Examples
    --------
    >>> count_parameters(in_channels=1, num_classes=2, depth=1, base_channels=4)
    1650
    """
    k3, k2 = 3**ndim, 2**ndim
    chans = [base_channels * 2**i for i in range(depth + 1)]

    def conv(c_in: int, c_out: int, k: int) -> int:
        return c_in * c_out * k + c_out

    total, c_prev = 0, in_channels
    for c in chans:  # contracting blocks and the bottom block
        total += conv(c_prev, c, k3) + conv(c, c, k3)
        c_prev = c
    for c in chans[:-1]:  # up-convolution + expanding block per level
        total += conv(2 * c, c, k2) + conv(2 * c, c, k3) + conv(c, c, k3)
    return total + conv(chans[0], num_classes, 1)


def _feature_maps(depth: int, base_channels: int, tile: tuple[int, ...], num_classes: int,
                  padding: str, pool) -> tuple[int, int]:
    """(elements of every kept feature map, elements of the largest) for one sample; ``tile``
    has one side per spatial axis, ``pool`` one tuple of factors per level."""
    import math

    shrink = 0 if padding == "same" else 2
    kept: list[int] = []
    sides = list(tile)

    def vox() -> int:
        return math.prod(sides)

    for level in range(depth + 1):
        c = base_channels * 2**level
        for _ in range(2):
            sides = [max(s - shrink, 1) for s in sides]
            kept.append(c * vox())
        if level < depth:
            sides = [max(s // f, 1) for s, f in zip(sides, pool[level], strict=True)]
            kept.append(c * vox() * 3)  # pooled map + its int64 indices
    for level in reversed(range(depth)):
        c = base_channels * 2**level
        sides = [s * f for s, f in zip(sides, pool[level], strict=True)]
        kept.append(c * vox())  # up-convolution output
        kept.append(2 * c * vox())  # concatenation with the skip map
        for _ in range(2):
            sides = [max(s - shrink, 1) for s in sides]
            kept.append(c * vox())
    kept.append(num_classes * vox() * 3)  # logits, soft-max, weights
    return sum(kept), max(kept)


def _tile_and_pool(tile, ndim: int, depth: int, pool):
    """(sides per axis, factors per level and axis) from an int or per-axis ``tile``."""
    from napari_unet.core.model.shapes import pool_levels

    if isinstance(tile, bool) or not isinstance(tile, int):
        sides = tuple(tile)
        if len(sides) != ndim or any(isinstance(t, bool) or not isinstance(t, int) or t < 1
                                     for t in sides):
            raise ValueError(f"tile: expected an integer >= 1 or {ndim} of them (one per axis), "
                             f"got {tile!r}")
    else:
        sides = (_check("tile", tile, 1),) * ndim
    levels = [f * ndim if len(f) == 1 else tuple(f) for f in pool_levels(pool, depth)]
    return sides, levels


def _check(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return value


def _estimate(*, in_channels, num_classes, depth, base_channels, tile, batch_size, ndim,
              padding, training, pool=None, checkpoint=True) -> int:
    import math

    for name, v, low in (("in_channels", in_channels, 1), ("num_classes", num_classes, 1),
                         ("depth", depth, 0), ("base_channels", base_channels, 1),
                         ("batch_size", batch_size, 1), ("ndim", ndim, 2)):
        _check(name, v, low)
    sides, levels = _tile_and_pool(tile, ndim, depth, pool)
    params = count_parameters(in_channels=in_channels, num_classes=num_classes, depth=depth,
                              base_channels=base_channels, ndim=ndim)
    total, largest = _feature_maps(depth, base_channels, sides, num_classes, padding, levels)
    inputs = in_channels * math.prod(sides)
    if training:  # all maps kept for backward + gradients in flight; weights, grads, 2 moments
        acts = batch_size * (total + 2 * largest + 3 * inputs)
        weights = (4 + (_CHECKPOINT_COPIES if checkpoint else 0)) * params
    else:  # the skip maps, the maps of the level being computed and the convolution buffers
        acts = batch_size * (total // 2 + largest + inputs)
        weights = params
    return int(_SAFETY * _FLOAT * (acts + weights))


def estimate_training_bytes(
    *,
    in_channels: int,
    num_classes: int,
    depth: int,
    base_channels: int,
    tile: int | tuple[int, ...],
    batch_size: int,
    ndim: int = 2,
    padding: str = "valid",
    pool=None,
    checkpoint: bool = True,
) -> int:
    """Bytes one training step of this U-Net needs (float32), from the shapes alone.

    ``tile`` is the network's input side (a square, or a cube for ``ndim=3``) or its shape,
    one side per axis; ``pool`` the pooling factors as :class:`~napari_unet.core.model.UNet`
    takes them (e.g. anisotropic ``((1, 2, 2), (2, 2, 2))``). ``checkpoint`` (default True)
    counts what writing a checkpoint holds on top: a copy of the weights, copies of the two
    optimiser moments and the file built in memory (6 floats per weight); False: a step alone.

    Examples
    --------
    >>> small = estimate_training_bytes(in_channels=1, num_classes=2, depth=2, base_channels=8,
    ...                                 tile=92, batch_size=1)
    >>> big = estimate_training_bytes(in_channels=1, num_classes=2, depth=2, base_channels=8,
    ...                               tile=92, batch_size=4)
    >>> 3 * small < big < 4 * small
    True
    """
    return _estimate(in_channels=in_channels, num_classes=num_classes, depth=depth,
                     base_channels=base_channels, tile=tile, batch_size=batch_size, ndim=ndim,
                     padding=padding, training=True, pool=pool, checkpoint=checkpoint)


def estimate_inference_bytes(
    *,
    in_channels: int,
    num_classes: int,
    depth: int,
    base_channels: int,
    tile: int | tuple[int, ...],
    batch_size: int = 1,
    ndim: int = 2,
    padding: str = "valid",
    pool=None,
) -> int:
    """Bytes a forward pass (no gradients) of ``batch_size`` tiles needs.

    Examples
    --------
    >>> estimate_inference_bytes(in_channels=1, num_classes=2, depth=4, base_channels=64,
    ...                          tile=572) < estimate_training_bytes(
    ...     in_channels=1, num_classes=2, depth=4, base_channels=64, tile=572, batch_size=1)
    True
    """
    return _estimate(in_channels=in_channels, num_classes=num_classes, depth=depth,
                     base_channels=base_channels, tile=tile, batch_size=batch_size, ndim=ndim,
                     padding=padding, training=False, pool=pool)


def format_bytes(n: float) -> str:
    """``1536`` → ``'1.5 KiB'``.

    Examples
    --------
    >>> format_bytes(3 * 2**30)
    '3.0 GiB'
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def _parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(text[-1:], 1)
    try:
        return int(float(text.rstrip("KMGT")) * scale)
    except ValueError:
        raise ValueError(
            f"NAPARI_UNET_MEMORY_LIMIT: expected bytes such as 8G or 500M, got {text!r}"
        ) from None


def _system_available() -> int:
    try:
        import psutil

        free = int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil ships with napari
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 2**60:
            used_file = Path(limit_file).with_name(
                "memory.current" if limit_file.endswith("max") else "memory.usage_in_bytes")
            try:
                used = int(used_file.read_text().strip())
            except (OSError, ValueError):
                used = 0
            free = min(free, max(int(raw) - used, 0))
        break
    return free


def available_bytes(device="cpu") -> int:
    """Memory a run on ``device`` may use: free GPU memory, or available system memory
    (cgroup-capped), capped by ``NAPARI_UNET_MEMORY_LIMIT``.

    Examples
    --------
    >>> available_bytes("cpu") > 0
    True
    """
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        import torch

        free = int(torch.cuda.mem_get_info(torch.device(device))[0])
    else:
        free = _system_available()
    cap = os.environ.get("NAPARI_UNET_MEMORY_LIMIT")
    return min(free, _parse_size(cap)) if cap else free


def check_memory(
    *,
    in_channels: int,
    num_classes: int,
    depth: int,
    base_channels: int,
    tile: int | tuple[int, ...],
    batch_size: int,
    ndim: int = 2,
    padding: str = "valid",
    device="cpu",
    training: bool = True,
    pool=None,
) -> None:
    """Raise ValueError, with a smaller setting suggested, when the run would not fit ``device``.

    ``tile`` is one side (a square, a cube for ``ndim=3``) or one side per axis; ``pool`` the
    pooling factors (3D: e.g. :func:`~napari_unet.core.model.anisotropic_pool`).

    Examples
    --------
    >>> check_memory(in_channels=1, num_classes=2, depth=1, base_channels=4, tile=44,
    ...              batch_size=1)
    >>> check_memory(in_channels=1, num_classes=2, depth=12, base_channels=64, tile=65532,
    ...              batch_size=1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: memory: training a U-Net of depth 12, base 64 channels on tiles of 65532 px, ...
    """
    arch = dict(in_channels=in_channels, num_classes=num_classes, depth=depth,
                base_channels=base_channels, ndim=ndim, padding=padding, pool=pool)
    estimate = estimate_training_bytes if training else estimate_inference_bytes
    need = estimate(tile=tile, batch_size=batch_size, **arch)
    have = available_bytes(device)
    budget = int(_HEADROOM * have)
    if need <= budget:
        return
    what = "training" if training else "predicting with"
    from napari_unet.core.model.fits import smaller_settings

    hints = smaller_settings(estimate, arch, tile=tile, batch_size=batch_size,
                             budget=budget)
    shown = f"{tile} px" if isinstance(tile, int) else "x".join(map(str, tile)) + " voxels"
    kind = f"{ndim}D U-Net" if ndim > 2 else "U-Net"
    raise ValueError(
        f"memory: {what} a {kind} of depth {depth}, base {base_channels} channels on tiles of "
        f"{shown}, batch {batch_size} needs about {format_bytes(need)}, but {device} has "
        f"{format_bytes(have)} available; {hints}"
    )
