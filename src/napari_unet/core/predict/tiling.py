"""Tile planning for overlap-tile prediction: mirrored reads, tile grids, blending windows.

Everything here is N-dimensional: the spatial axes are the model's (``model.ndim``, 2 or 3),
arrays are channels-first ``(C, *spatial)`` and regions are flat tuples with one (start, stop)
pair per spatial axis, ``(y0, y1, x0, x1)`` or ``(z0, z1, y0, y1, x0, x1)``.

Valid-padding U-Nets (the paper) are equivariant to shifts by the max-pooling grid only: along
each axis the product of that axis's pooling factors (``2**depth`` for the usual 2×2 pooling;
with anisotropic 1×2×2 pooling at some levels, less along z), see :func:`tile_alignment`. Output
tiles start at multiples of it in image coordinates and neighbouring tiles overlap by the
remainder; each output tile is computed from its input tile with ``model.margins[axis]`` pixels
of context on each side, mirrored (``np.pad(mode="reflect")``, repeated as often as needed)
outside the image. Every output pixel is then exactly what one pass over the mirror-padded whole
image gives, whatever the tile size.

"Same"-padding U-Nets see zeros at every tile edge, so their tiles overlap and are blended with a
smooth (Hann) window with a floor; the sum is normalised by the summed window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = [
    "auto_tile_shape",
    "blend_window",
    "reflect_indices",
    "region_reader",
    "same_tile_starts",
    "tile_alignment",
    "valid_tile_starts",
]


def reflect_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices ``start..stop-1`` mapped into ``[0, size)`` by mirroring (numpy's "reflect").

    Equivalent to indexing ``np.pad(x, width, mode="reflect")`` for any width, including widths
    larger than the array (repeated reflection).

    Examples
    --------
    >>> reflect_indices(-3, 6, 3).tolist()
    [1, 2, 1, 0, 1, 2, 1, 0, 1]
    """
    idx = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(idx)
    period = 2 * (size - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= size, period - idx, idx)


def region_reader(
    source, *, transform: Callable[[np.ndarray], np.ndarray] | None = None
) -> Callable[..., np.ndarray]:
    """A function ``read(*bounds) -> (C, *sizes) float32`` with mirrored borders.

    ``bounds`` is flat, one (start, stop) pair per spatial axis: ``read(y0, y1, x0, x1)`` for
    an image, ``read(z0, z1, y0, y1, x0, x1)`` for a volume; the pairs address the last axes of
    ``source``.

    Parameters
    ----------
    source : array-like, shape (C, *spatial)
        numpy, zarr or dask array (anything with ``.shape`` and basic slicing); only the bounding
        box of the requested in-image pixels is read.
    transform : callable, optional
        Applied to each read block (e.g. normalisation), before mirroring.

    Examples
    --------
    >>> read = region_reader(np.arange(9.0).reshape(1, 3, 3))
    >>> read(-1, 1, 0, 3)[0].tolist()
    [[3.0, 4.0, 5.0], [0.0, 1.0, 2.0]]
    >>> read3 = region_reader(np.arange(8.0).reshape(1, 2, 2, 2))
    >>> read3(-1, 1, 0, 2, 0, 1)[0, :, :, 0].tolist()
    [[4.0, 6.0], [0.0, 2.0]]
    """

    def read(*bounds: int) -> np.ndarray:
        if len(bounds) % 2 or not bounds or len(bounds) // 2 > len(source.shape):
            raise ValueError(
                f"bounds: expected one (start, stop) pair per spatial axis of an array of shape "
                f"{tuple(source.shape)}, got {bounds!r}"
            )
        n = len(bounds) // 2
        sizes = [int(m) for m in source.shape[-n:]]
        pairs = [(int(bounds[2 * i]), int(bounds[2 * i + 1])) for i in range(n)]
        idx = [reflect_indices(a, b, m) for (a, b), m in zip(pairs, sizes, strict=True)]
        box = [(int(r.min()), int(r.max()) + 1) for r in idx]
        block = np.asarray(source[(Ellipsis, *(slice(a, b) for a, b in box))])
        if transform is not None:
            block = transform(block)
        block = block.astype(np.float32, copy=False)
        if all(bx == p for bx, p in zip(box, pairs, strict=True)):
            return block
        lead = block.ndim - n
        for i, (r, (a, _b), p) in enumerate(zip(idx, box, pairs, strict=True)):
            if (a, _b) != p:
                block = np.take(block, r - a, axis=lead + i)
        return block

    return read


def tile_alignment(model) -> tuple[int, ...]:
    """The pooling grid per spatial axis: the product of that axis's pooling factors.

    Output tiles of a valid-padding network start at multiples of it (``2**depth`` per axis for
    2×2 pooling; less along z with anisotropic pooling).

    Examples
    --------
    >>> from napari_unet.core.model import UNet
    >>> tile_alignment(UNet(depth=3, base_channels=2))
    (8, 8)
    >>> tile_alignment(UNet(depth=2, base_channels=2, ndim=3, pool=((1, 2, 2), (2, 2, 2))))
    (2, 4, 4)
    """
    return tuple(math.prod(f[axis] for f in model.pool_factors) for axis in range(model.ndim))


def axis_pool(model, axis: int) -> tuple[tuple[int], ...]:
    """The pooling factors of one spatial axis, in the form ``valid_input_shape`` takes."""
    return tuple((f[axis],) for f in model.pool_factors)


def axis_input(model, axis: int, side: int) -> int:
    """The smallest valid input side ≥ ``side`` along spatial axis ``axis``."""
    from napari_unet.core.model.shapes import valid_input_shape

    return valid_input_shape((int(side),), model.depth, padding=model.padding,
                             pool=axis_pool(model, axis))[0]


def axis_output(model, axis: int, side: int) -> int:
    """The output side of a valid input side ``side`` along spatial axis ``axis``."""
    from napari_unet.core.model.shapes import valid_output_shape

    return valid_output_shape((int(side),), model.depth, padding=model.padding,
                              pool=axis_pool(model, axis))[0]


def valid_tile_starts(start: int, stop: int, out_tile: int, align: int) -> list[int]:
    """Output-tile starts covering ``[start, stop)`` for a valid-padding network.

    Every start is ``start + k * align`` (``start`` itself must be aligned), consecutive tiles
    overlap by less than ``align`` plus whatever the last tile needs; the last tile may run past
    ``stop`` by less than ``align`` pixels (it is cropped).

    Examples
    --------
    >>> valid_tile_starts(0, 100, 36, 16)
    [0, 32, 64]
    """
    step = (out_tile // align) * align
    if step < align:
        raise ValueError(
            f"out_tile: expected an output tile of at least {align} pixels (the pooling grid), got "
            f"{out_tile}; use a larger tile_shape"
        )
    if stop - start <= out_tile:
        return [start]
    last = start + math.ceil((stop - out_tile - start) / align) * align
    starts = list(range(start, last, step))
    return [*starts, last]


def same_tile_starts(start: int, stop: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread tile starts covering ``[start, stop)`` with at least ``overlap`` overlap.

    Examples
    --------
    >>> same_tile_starts(0, 100, 48, 16)
    [0, 26, 52]
    """
    length = stop - start
    if length <= tile:
        return [start]
    n = math.ceil((length - tile) / max(1, tile - overlap)) + 1
    return [start + round(i * (length - tile) / (n - 1)) for i in range(n)]


def blend_window(shape: Sequence[int], *, floor: float = 0.05) -> np.ndarray:
    """Hann window ``floor + (1 - floor) * Π_axes sin²(π (i + ½) / n)``, float32, any ndim.

    Examples
    --------
    >>> w = blend_window((4, 6))
    >>> w.shape, bool(w.min() >= 0.05), bool(w[1:3, 2:4].min() > 0.4)
    ((4, 6), True, True)
    >>> blend_window((4, 4, 6)).shape
    (4, 4, 6)
    """
    window = np.ones((), np.float64)
    for n in shape:
        i = np.arange(n, dtype=np.float64)
        window = np.multiply.outer(window, np.sin(np.pi * (i + 0.5) / n) ** 2)
    return (floor + (1 - floor) * window).astype(np.float32)


def _budget(device: torch.device) -> tuple[float, bool]:
    """(bytes a prediction may use, whether autocast halves the activations)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return 0.4 * free, True
    from napari_unet.core.model.memory import available_bytes

    # a quarter of what the run may use (cgroup and NAPARI_UNET_MEMORY_LIMIT included): the
    # rest holds the image, its probabilities and labels (core.predict.footprint)
    return min(2.0**31, available_bytes("cpu") / 4), False


def _cube_side(model, budget: float, half: bool) -> int:
    """The largest cube side whose forward pass fits ``budget`` (:func:`napari_unet.core.model.estimate_inference_bytes`)."""
    from napari_unet.core.model.memory import estimate_inference_bytes

    def cost(side: int) -> float:
        b = estimate_inference_bytes(in_channels=model.in_channels, num_classes=model.num_classes,
                                     depth=model.depth, base_channels=model.base_channels,
                                     tile=side, ndim=model.ndim, padding=model.padding)
        return b / 2 if half else b

    lo, hi = 1, 1024
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if cost(mid) <= budget else (lo, mid - 1)
    return lo


def auto_tile_shape(
    model, image_shape: Sequence[int], device: torch.device | str = "cpu"
) -> tuple[int, ...]:
    """A network input tile for ``model`` (one side per spatial axis) that fits the device's
    memory (never much larger than the image needs).

    ``image_shape``'s last ``model.ndim`` sizes are the spatial ones. Budget: on CPU up to 2 GiB
    (a quarter of :func:`napari_unet.core.model.available_bytes` at most: cgroup limits and
    ``NAPARI_UNET_MEMORY_LIMIT`` included), on CUDA 40 % of the free memory
    (``torch.cuda.mem_get_info``), half the bytes with autocast. 2D: about
    32·``base_channels`` bytes per input pixel (measured: 450 B/px at base 16), the side at
    most 2048 + context (larger tiles gain little over the margin overhead). 3D: the largest
    cube whose forward pass :func:`napari_unet.core.model.estimate_inference_bytes` fits.

    Examples
    --------
    >>> from napari_unet.core.model import UNet
    >>> auto_tile_shape(UNet(base_channels=16), (300, 500))  # small images: one tile
    (492, 684)
    >>> auto_tile_shape(UNet(depth=1, base_channels=2, ndim=3), (10, 20, 30))
    (26, 36, 46)
    """
    device = torch.device(device)
    spatial = [int(n) for n in image_shape[-model.ndim :]]
    if len(spatial) != model.ndim:
        raise ValueError(
            f"image_shape: expected at least {model.ndim} spatial sizes for a {model.ndim}D "
            f"model, got {tuple(image_shape)}"
        )
    budget, half = _budget(device)
    margins = model.margins
    if model.ndim == 2:
        bytes_per_px = 32.0 * model.base_channels + 8.0 * model.in_channels
        bytes_per_px = bytes_per_px / 2 if half else bytes_per_px
        side = int(min(math.sqrt(budget / bytes_per_px), 2048 + 2 * max(margins)))
    else:
        side = _cube_side(model, budget, half)
    align = tile_alignment(model)
    return tuple(
        _balanced_side(model, axis, n, max(side, axis_input(model, axis, align[axis] + 2 * m)))
        for axis, (n, m) in enumerate(zip(spatial, margins, strict=True))
    )


def _balanced_side(model, axis: int, length: int, max_side: int) -> int:
    """The smallest valid tile side ≤ ``max_side`` along ``axis`` that covers ``length`` in the
    fewest tiles (equal tiles instead of full ones plus a sliver: less computed overlap)."""
    m, align = model.margins[axis], tile_alignment(model)[axis]
    smallest = axis_input(model, axis, align + 2 * m)
    for n in range(1, length + 1):
        side = max(smallest, axis_input(model, axis, math.ceil(length / n) + 2 * m))
        if side > max_side:
            continue
        if model.padding == "same":
            return side
        out = axis_output(model, axis, side)
        if len(valid_tile_starts(0, length, out, align)) <= n:
            return side
        side = axis_input(model, axis, side + align)  # one step larger covers with n tiles
        if side <= max_side:
            return side
    return max_side if model.padding == "same" else axis_input(model, axis, max_side)
