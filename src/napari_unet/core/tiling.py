"""Tile planning for overlap-tile prediction: mirrored reads, tile grids, blending windows.

Valid-padding U-Nets (the paper) are equivariant to shifts by ``2**depth`` pixels only (the
max-pooling grid), so output tiles start at multiples of ``2**depth`` in image coordinates and
neighbouring tiles overlap by the remainder; each output tile is computed from its input tile with
``model.margin`` pixels of context on each side, mirrored (``np.pad(mode="reflect")``, repeated
as often as needed) outside the image. Every output pixel is then exactly what one pass over the
mirror-padded whole image gives, whatever the tile size.

"Same"-padding U-Nets see zeros at every tile edge, so their tiles overlap and are blended with a
smooth (Hann) window with a floor; the sum is normalised by the summed window.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = [
    "auto_tile_shape",
    "blend_window",
    "reflect_indices",
    "region_reader",
    "same_tile_starts",
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
) -> Callable[[int, int, int, int], np.ndarray]:
    """A function ``read(y0, y1, x0, x1) -> (C, y1-y0, x1-x0) float32`` with mirrored borders.

    Parameters
    ----------
    source : array-like, shape (C, H, W)
        numpy, zarr or dask array (anything with ``.shape`` and basic slicing); only the bounding
        box of the requested in-image pixels is read.
    transform : callable, optional
        Applied to each read block (e.g. normalisation), before mirroring.

    Examples
    --------
    >>> read = region_reader(np.arange(9.0).reshape(1, 3, 3))
    >>> read(-1, 1, 0, 3)[0].tolist()
    [[3.0, 4.0, 5.0], [0.0, 1.0, 2.0]]
    """
    h, w = int(source.shape[-2]), int(source.shape[-1])

    def read(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        ry, rx = reflect_indices(y0, y1, h), reflect_indices(x0, x1, w)
        ya, yb, xa, xb = int(ry.min()), int(ry.max()) + 1, int(rx.min()), int(rx.max()) + 1
        block = np.asarray(source[..., ya:yb, xa:xb])
        if transform is not None:
            block = transform(block)
        block = block.astype(np.float32, copy=False)
        if ya == y0 and yb == y1 and xa == x0 and xb == x1:
            return block
        return block[..., ry - ya, :][..., rx - xa]

    return read


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
            f"out_tile: expected an output tile of at least {align} pixels (2**depth), got "
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
    """Hann window ``floor + (1 - floor) * sin²(π (i + ½) / h) · sin²(π (j + ½) / w)``, float32.

    Examples
    --------
    >>> w = blend_window((4, 6))
    >>> w.shape, bool(w.min() >= 0.05), bool(w[1:3, 2:4].min() > 0.4)
    ((4, 6), True, True)
    """
    axes = []
    for n in shape:
        i = np.arange(n, dtype=np.float64)
        axes.append(np.sin(np.pi * (i + 0.5) / n) ** 2)
    return (floor + (1 - floor) * np.outer(axes[0], axes[1])).astype(np.float32)


def auto_tile_shape(
    model, image_shape: Sequence[int], device: torch.device | str = "cpu"
) -> tuple[int, int]:
    """A network input tile for ``model`` that fits the device's memory (never much larger than
    the image needs).

    CPU: up to 2 GiB (a quarter of the available memory at most) of activations, about
    32·``base_channels`` bytes per input pixel (measured: 450 B/px at base 16); CUDA: 40 % of the
    free memory (``torch.cuda.mem_get_info``), half the bytes per pixel with autocast. The side is
    at most 2048 + context: larger tiles gain little over the margin overhead.

    Examples
    --------
    >>> from napari_unet.core.model import UNet
    >>> auto_tile_shape(UNet(base_channels=16), (300, 500))  # small images: one tile
    (492, 684)
    """
    device = torch.device(device)
    bytes_per_px = 32.0 * model.base_channels + 8.0 * model.in_channels
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        budget, bytes_per_px = 0.4 * free, bytes_per_px / 2
    else:
        budget = 2.0**31
        with contextlib.suppress(AttributeError, ValueError, OSError):
            budget = min(budget, os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 4)
    side = int(min(math.sqrt(budget / bytes_per_px), 2048 + 2 * model.margin))
    side = max(side, model.valid_input_shape(2**model.depth + 2 * model.margin)[0])
    return tuple(_balanced_side(model, int(n), side) for n in image_shape[-2:])  # type: ignore[return-value]


def _balanced_side(model, length: int, max_side: int) -> int:
    """The smallest valid tile side ≤ ``max_side`` that covers ``length`` in the fewest tiles
    (equal tiles instead of full ones plus a sliver: less computed overlap)."""
    m, align = model.margin, 2**model.depth
    smallest = model.valid_input_shape(align + 2 * m)[0]
    for n in range(1, length + 1):
        side = max(smallest, model.valid_input_shape(math.ceil(length / n) + 2 * m)[0])
        if side > max_side:
            continue
        if model.padding == "same":
            return side
        out = model.output_shape((side, side))[0]
        if len(valid_tile_starts(0, length, out, align)) <= n:
            return side
        side = model.valid_input_shape(side + align)[0]  # one step larger covers with n tiles
        if side <= max_side:
            return side
    return max_side if model.padding == "same" else model.valid_input_shape(max_side)[0]
