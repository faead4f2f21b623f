"""Smaller settings that fit: what a memory refusal (:func:`napari_unet.core.model.memory.
check_memory`) suggests. Every suggestion is checked against the budget as it is written."""

from __future__ import annotations

__all__ = ["smaller_settings"]


def smaller_settings(estimate, arch: dict, *, tile: int, batch_size: int, budget: int) -> str:
    """Settings that fit ``budget`` bytes, each checked with ``estimate`` (a function of the
    architecture ``arch``, ``tile`` and ``batch_size``) with everything else unchanged: a
    smaller batch; a smaller tile at this batch (or, where none fits, at a batch of 1); else
    fewer base channels or levels. Settings are written ``name=value`` too, which the error
    formatter turns into the option the user types (:func:`napari_unet.errors.format_error`)."""
    from napari_unet.core.model.shapes import valid_input_shape

    depth, padding = arch["depth"], arch["padding"]
    if not isinstance(tile, int) or arch["ndim"] > 2:
        return _hints_nd(estimate, arch, tile=tile, batch_size=batch_size, budget=budget)
    out = []
    if batch_size > 1 and estimate(tile=tile, batch_size=1, **arch) <= budget:
        per = estimate(tile=tile, batch_size=1, **arch)
        fit = max(1, min(batch_size - 1, int(budget // max(per, 1))))
        while fit > 1 and estimate(tile=tile, batch_size=fit, **arch) > budget:
            fit -= 1
        out.append(f"use a batch of {fit} (batch_size={fit})")
    side = _largest_tile(estimate, arch, tile, batch_size, budget)
    if side is not None:
        out.append(f"use a tile of {side} px (tile={side})")
    elif batch_size > 1 and (side := _largest_tile(estimate, arch, tile, 1, budget)) is not None:
        out.append(f"use a batch of 1 and a tile of {side} px (batch_size=1, tile={side})")
    elif not out:
        smallest = valid_input_shape(1, depth, padding=padding)[0]
        base = arch["base_channels"]
        while base > 1 and estimate(tile=smallest, batch_size=batch_size,
                                    **{**arch, "base_channels": base}) > budget:
            base //= 2
        if base < arch["base_channels"] and estimate(
                tile=smallest, batch_size=batch_size, **{**arch, "base_channels": base}) <= budget:
            out.append(f"use {base} base channels and the smallest tile, {smallest} px "
                       f"(base_channels={base}, tile={smallest}), or a smaller depth")
        else:
            d = depth
            while d > 0 and estimate(tile=valid_input_shape(1, d, padding=padding)[0],
                                     batch_size=batch_size, **{**arch, "depth": d}) > budget:
                d -= 1
            side = valid_input_shape(1, d, padding=padding)[0]
            if estimate(tile=side, batch_size=batch_size, **{**arch, "depth": d}) <= budget:
                out.append(f"use a depth of at most {d} and a tile of {side} px (depth={d}, "
                           f"tile={side})")
    return "; or ".join(out) if out else "free memory or use a smaller network"


def _largest_tile(estimate, arch: dict, tile: int, batch_size: int, budget: int) -> int | None:
    """The largest valid tile side below ``tile`` that fits ``budget`` at ``batch_size``."""
    from napari_unet.core.model.shapes import nearest_valid_sizes, valid_input_shape

    depth, padding = arch["depth"], arch["padding"]
    smallest = valid_input_shape(1, depth, padding=padding)[0]
    if smallest >= tile or estimate(tile=smallest, batch_size=batch_size, **arch) > budget:
        return None
    lo, hi = smallest, tile
    while hi - lo > 1:  # the largest side that fits, then the valid one at or below it
        mid = (lo + hi) // 2
        fits = estimate(tile=mid, batch_size=batch_size, **arch) <= budget
        lo, hi = (mid, hi) if fits else (lo, mid)
    sizes = [s for s in nearest_valid_sizes(lo, depth=depth, padding=padding) if s <= lo]
    side = sizes[-1] if sizes else smallest
    return side if estimate(tile=side, batch_size=batch_size, **arch) <= budget else smallest


def _hints_nd(estimate, arch: dict, *, tile, batch_size: int, budget: int) -> str:
    """Smaller settings for a 3D (or per-axis) tile, each checked as written with the rest
    unchanged: a smaller batch; a tile scaled down along every axis (valid for the pooling) at
    this batch, else at a batch of 1; else fewer base channels, or fewer levels, with the
    smallest tile and a batch of 1. A tile is written ``tile=DxHxW``."""
    from napari_unet.core.model.shapes import valid_input_shape

    nd, depth, padding, pool = arch["ndim"], arch["depth"], arch["padding"], arch["pool"]
    sides = tuple(tile) if not isinstance(tile, int) else (tile,) * nd

    def fits(shape, batch, **changes) -> bool:
        return estimate(tile=shape, batch_size=batch, **{**arch, **changes}) <= budget

    def smallest_of(d, p=pool) -> tuple[int, ...]:
        return tuple(int(v) for v in valid_input_shape((1,) * nd, d, padding=padding, pool=p))

    def shown(shape) -> str:
        return "x".join(map(str, shape))

    out = []
    if batch_size > 1 and fits(sides, 1):
        per = estimate(tile=sides, batch_size=1, **arch)
        fit = max(1, min(batch_size - 1, int(budget // max(per, 1))))
        while fit > 1 and not fits(sides, fit):
            fit -= 1
        out.append(f"use a batch of {fit} (batch_size={fit})")
    smallest = smallest_of(depth)

    def scaled(k: float) -> tuple[int, ...]:
        want = [max(1, int(s * k)) for s in sides]
        return tuple(int(v) for v in valid_input_shape(want, depth, padding=padding, pool=pool))

    batch = batch_size if fits(smallest, batch_size) else 1
    if fits(smallest, batch):
        lo, hi = 0.0, 1.0
        for _ in range(20):  # the largest scale of the tile that fits
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if fits(scaled(mid), batch) else (lo, mid)
        fit = scaled(lo) if fits(scaled(lo), batch) else smallest
        if fit != sides:
            out.append(f"use a batch of 1 and a tile of {shown(fit)} voxels (batch_size=1, "
                       f"tile={shown(fit)})" if batch != batch_size else
                       f"use a tile of {shown(fit)} voxels (tile={shown(fit)})")
        return "; or ".join(out) if out else "free memory or use a smaller network"
    base = arch["base_channels"]
    while base > 1 and not fits(smallest, 1, base_channels=base):
        base //= 2
    if base < arch["base_channels"] and fits(smallest, 1, base_channels=base):
        out.append(f"use {base} base channels, a batch of 1 and a tile of {shown(smallest)} "
                   f"voxels (base_channels={base}, batch_size=1, tile={shown(smallest)})")
    for d in range(depth - 1, 0, -1):  # the most levels that fit
        p = pool if pool is None or isinstance(pool, int) else tuple(pool)[:d]
        if fits(smallest_of(d, p), 1, depth=d, pool=p):
            out.append(f"use a depth of {d}, a batch of 1 and a tile of "
                       f"{shown(smallest_of(d, p))} voxels (depth={d}, batch_size=1, "
                       f"tile={shown(smallest_of(d, p))})")
            break
    return "; or ".join(out) if out else "free memory or use a smaller network"
