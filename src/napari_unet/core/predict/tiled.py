"""Overlap-tile prediction of images and volumes of any size, stacks plane by plane, and labels.

One code path for 2D and 3D: the spatial axes are the model's (``model.ndim``); a 3D model
predicts a (Z, Y, X) volume as a volume, a 2D model a stack plane by plane
(:func:`iter_predict_stack`).

:func:`iter_predict_tiled` is the engine: a generator that yields a :class:`PredictProgress` per
batch of tiles (the GUI and the command line show it; a consumer cancels by no longer iterating)
and whose last event carries the probabilities. :func:`predict_tiled` runs it to the end.
The tiling itself is described in :mod:`napari_unet.core.predict.tiling`; the labels in
:mod:`napari_unet.core.predict.postprocess`; chunk-wise zarr/dask/distributed prediction in
:mod:`napari_unet.core.predict.blockwise`.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from napari_unet.core.model.unet import UNet
from napari_unet.core.predict.passes import TileTooLarge, forward_safe, prepare_model
from napari_unet.core.predict.tiling import (
    auto_tile_shape,
    axis_input,
    axis_output,
    blend_window,
    region_reader,
    same_tile_starts,
    tile_alignment,
    valid_tile_starts,
)

__all__ = [
    "PredictProgress",
    "as_chw",
    "iter_predict_region",
    "iter_predict_tiled",
    "predict_tiled",
    "return_value",
    "run_to_end",
]

logger = logging.getLogger(__name__)

Reader = Callable[..., np.ndarray]  # read(*bounds) -> (C, *sizes), one (start, stop) per axis


@dataclass
class PredictProgress:
    """One progress event: ``done`` of ``total`` tile batches (of plane ``plane`` of ``planes``).

    ``result`` is None except on the last event, which carries the probabilities (and, from
    :func:`napari_unet.core.predict.iter_segment`, ``labels`` the instance labels).
    """

    done: int
    total: int
    plane: int = 0
    planes: int = 1
    result: np.ndarray | None = None
    message: str = ""
    labels: np.ndarray | None = None
    #: with test-time augmentation and ``flip_std=True``, on the last event: per pixel, the
    #: standard deviation over the test-time augmentation's passes of the foreground
    #: probability (1 − P(0)); with several scales, over every pass at every scale
    #: (:func:`napari_unet.core.predict.scales.iter_predict_scales`)
    flip_std: np.ndarray | None = None


def _pairs(region: Sequence[int], ndim: int, name: str = "region") -> list[tuple[int, int]]:
    region = tuple(int(v) for v in region)
    if len(region) != 2 * ndim or any(b <= a for a, b in zip(region[::2], region[1::2], strict=False)):
        raise ValueError(
            f"{name}: expected one (start, stop) pair per spatial axis of a {ndim}D model, "
            f"flat ({', '.join(f'{a}0, {a}1' for a in 'zyx'[-ndim:])}) with stop > start, "
            f"got {region!r}"
        )
    return list(zip(region[::2], region[1::2], strict=True))


def _plan(model: UNet, pairs, tile, context):
    """Tile starts (input coordinates) per axis, input tile shape, output tile shape."""
    align = tile_alignment(model)
    starts, tin, tout = [], [], []
    for axis, (a, b) in enumerate(pairs):
        if model.padding == "valid":
            m = model.margins[axis]
            t = min(tile[axis], axis_input(model, axis, max(b - a, align[axis]) + 2 * m))
            o = axis_output(model, axis, t)
            starts.append([s - m for s in valid_tile_starts(a, b, o, align[axis])])
        else:
            c = context[axis]
            t = min(tile[axis], axis_input(model, axis, b - a + 2 * c))
            o = t
            starts.append(same_tile_starts(a - c, b + c, t, max(align[axis], t // 4)))
        tin.append(t)
        tout.append(o)
    return starts, tuple(tin), tuple(tout)


def _smaller_tile(model: UNet, tile: tuple[int, ...]) -> tuple[int, ...]:
    """About half the output per axis, still valid (after an out-of-memory error)."""
    return tuple(
        axis_input(model, axis, max(1, (t - 2 * m) // 2) + 2 * m)
        for axis, (t, m) in enumerate(zip(tile, model.margins, strict=True))
    )


def iter_predict_region(
    model: UNet,
    read: Reader,
    region: Sequence[int],
    *,
    tile_shape: Sequence[int],
    batch_size: int = 1,
    tta: bool = False,
    flip_std: bool = False,
) -> Generator[PredictProgress, None, np.ndarray]:
    """Predict the output pixels (voxels) ``region`` of an image (volume) read through ``read``.

    ``region`` is flat, one (start, stop) pair per spatial axis of the model: ``(y0, y1, x0,
    x1)``, or ``(z0, z1, y0, y1, x0, x1)`` for a 3D model. ``read(*bounds)`` (same form)
    returns the (mirrored) input ``(C, *sizes)``, e.g. :func:`napari_unet.core.predict.tiling.region_reader`.
    ``tile_shape`` has one input side per spatial axis. Yields a progress event per tile batch;
    returns float32 ``(num_classes, *sizes)`` (with ``flip_std``, one more channel last: the
    spread of the flips, see :func:`iter_predict_tiled`). For valid models the region starts must be
    multiples of :func:`~napari_unet.core.predict.tiling.tile_alignment` for results that are
    independent of the region (and identical to one whole-image pass).

    Examples
    --------
    >>> net = UNet(depth=1, base_channels=2, ndim=3).eval()
    >>> read = region_reader(np.random.rand(1, 12, 14, 16).astype(np.float32))
    >>> with torch.inference_mode():
    ...     prob = return_value(iter_predict_region(net, read, (0, 12, 2, 14, 0, 16),
    ...                                             tile_shape=(18, 18, 18)))
    >>> prob.shape
    (2, 12, 12, 16)
    """
    pairs = _pairs(region, model.ndim)
    tile = tuple(int(t) for t in tile_shape)
    if len(tile) != model.ndim:
        raise ValueError(
            f"tile_shape: expected {model.ndim} sides (one per spatial axis of the model), "
            f"got {tile_shape!r}"
        )
    state = {"batch_size": max(1, int(batch_size)), "spread": bool(flip_std)}
    while True:
        context = tuple(t // 8 if model.padding == "same" else 0 for t in tile)
        starts, tin, tout = _plan(model, pairs, tile, context)
        try:
            return (yield from _predict_tiles(model, read, pairs, context, starts, tin, tout,
                                              state, tta))
        except TileTooLarge:
            smaller = _smaller_tile(model, tile)
            smallest = model.valid_input_shape(tile_alignment(model))
            if smaller == tin or all(t <= s for t, s in zip(tin, smallest, strict=True)):
                raise MemoryError(
                    f"out of memory even with one tile of {tin} pixels; free device memory or "
                    "use device='cpu'"
                ) from None
            logger.warning("out of memory with tiles of %s; retrying with %s", tin, smaller)
            tile = smaller


def _predict_tiles(model: UNet, read: Reader, pairs, context, starts, tin, tout, state: dict,
                   tta: bool) -> Generator[PredictProgress, None, np.ndarray]:
    """Predict every tile of the plan in batches and paste the outputs (valid: side by side;
    same: blended); yields a progress event per batch, returns the probabilities."""
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    sizes = tuple(b - a for a, b in pairs)
    jobs = list(itertools.product(*starts))
    acc, wsum, window, origin = _accumulator(model, pairs, context, tin, tout,
                                             channels=model.num_classes + state["spread"])
    done, total = 0, math.ceil(len(jobs) / state["batch_size"])
    i = 0
    while i < len(jobs):
        batch = jobs[i : i + state["batch_size"]]
        x = np.stack([
            read(*itertools.chain.from_iterable((a, a + t) for a, t in zip(job, tin, strict=True)))
            for job in batch
        ])  # fmt: skip
        prob = forward_safe(model, torch.from_numpy(x).to(device, dtype), tta, state)
        for job, p in zip(batch, prob, strict=True):
            # output tile start in acc coordinates, and how much of it lies inside acc
            t0 = [a + m - o for a, m, o in zip(job, model.margins, origin, strict=True)]
            if window is None:
                keep = [min(to, n - t) for to, n, t in zip(tout, sizes, t0, strict=True)]
                dst = tuple(slice(t, t + h) for t, h in zip(t0, keep, strict=True))
                acc[(slice(None), *dst)] = p[(slice(None), *(slice(0, h) for h in keep))]
            else:
                dst = tuple(slice(t, t + h) for t, h in zip(t0, tout, strict=True))
                acc[(slice(None), *dst)] += p * window
                wsum[dst] += window
        i += len(batch)
        done += 1
        total = done + math.ceil((len(jobs) - i) / state["batch_size"])
        yield PredictProgress(done, total)
    if wsum is not None:
        crop = tuple(slice(c, c + n) for c, n in zip(context, sizes, strict=True))
        acc = acc[(slice(None), *crop)] / wsum[crop]
    return acc


def _accumulator(model: UNet, pairs, context, tin, tout, *, channels: int):
    """(probabilities, weight sum, blending window, origin) the tiles are pasted into, with
    ``channels`` channels: the region itself for a valid model; for a same-padded one the region
    with its context and the window that blends overlapping tiles."""
    k, sizes = channels, tuple(b - a for a, b in pairs)
    if model.padding != "same":
        return np.empty((k, *sizes), np.float32), None, None, tuple(a for a, _b in pairs)
    origin = tuple(a - c for (a, _b), c in zip(pairs, context, strict=True))
    shape = tuple(max(n + 2 * c, t) for n, c, t in zip(sizes, context, tin, strict=True))
    return (np.zeros((k, *shape), np.float32), np.zeros(shape, np.float32), blend_window(tout),
            origin)


def as_chw(model: UNet, image: np.ndarray, name: str = "image") -> np.ndarray:
    """``image`` as (C, *spatial) with C the model's input channels and ``model.ndim`` spatial
    axes ((C, H, W), or (C, Z, Y, X) for a 3D model); a ValueError naming ``name``.

    Examples
    --------
    >>> as_chw(UNet(depth=1, ndim=3), np.zeros((4, 5, 6))).shape
    (1, 4, 5, 6)
    """
    image = np.asarray(image)
    nd = model.ndim
    if image.ndim == nd:
        image = image[None]
    if image.ndim != nd + 1 or image.shape[0] != model.in_channels:
        axes = "(H, W) or (C, H, W)" if nd == 2 else "(Z, Y, X) or (C, Z, Y, X)"
        hint = (
            "; a 3D array for a 2D model: predict it plane by plane (predict_stack)"
            if nd == 2 and image.ndim == 3 else
            "; this is a 3D model: give a volume, or use a 2D model for single images"
            if nd == 3 and image.ndim < 3 else ""
        )  # fmt: skip
        raise ValueError(
            f"{name}: expected {axes} with C = {model.in_channels} (the model's input "
            f"channels), got shape {image.shape}; give channel_axis for channels-last images, "
            f"or use a model trained on this number of channels{hint}"
        )
    return image


def iter_predict_tiled(
    model: UNet,
    image: np.ndarray,
    *,
    tile_shape: Sequence[int] | None = None,
    batch_size: int = 1,
    device=None,
    tta: bool = False,
    flip_std: bool = False,
) -> Generator[PredictProgress, None, np.ndarray]:
    """Like :func:`predict_tiled`, yielding a :class:`PredictProgress` per batch of tiles.

    The last event has ``result`` set (also the generator's return value). Stop iterating to
    cancel; the model's training mode is restored when the generator ends or is closed. With
    ``tta`` and ``flip_std`` the last event also has ``flip_std``: per pixel, the standard
    deviation over the test-time augmentation's passes of the foreground probability 1 − P(0),
    from the same forward passes (how much they disagree; 0 where they agree).

    Examples
    --------
    >>> net = UNet(depth=1, base_channels=2)
    >>> events = list(iter_predict_tiled(net, np.zeros((30, 30), np.float32), tile_shape=(20, 20)))
    >>> events[-1].result.shape, events[-1].done == events[-1].total
    ((2, 30, 30), True)
    """
    image = as_chw(model, image)
    prepare_model(model, device)
    spatial = image.shape[1:]
    if tile_shape is None:
        tile_shape = auto_tile_shape(model, spatial, next(model.parameters()).device)
    else:
        tile_shape = tuple(int(t) for t in tile_shape)
        if len(tile_shape) != model.ndim:
            axes = "(height, width)" if model.ndim == 2 else "(depth, height, width)"
            raise ValueError(
                f"tile_shape: expected {axes} for a {model.ndim}D model, got {tile_shape!r}"
            )
        model.output_shape(tile_shape)  # a helpful error for an invalid tile
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            region = tuple(v for n in spatial for v in (0, int(n)))
            gen = iter_predict_region(
                model, region_reader(image), region,
                tile_shape=tile_shape, batch_size=batch_size, tta=tta, flip_std=tta and flip_std,
            )  # fmt: skip
            last = PredictProgress(0, 1)
            while True:
                try:
                    last = next(gen)
                except StopIteration as stop:
                    result = stop.value
                    break
                yield last
    finally:
        model.train(was_training)
    spread = None
    if tta and flip_std:
        result, spread = result[:-1], result[-1]
    yield PredictProgress(last.done, last.total, result=result, message="done", flip_std=spread)
    return result


def predict_tiled(
    model: UNet,
    image: np.ndarray,
    *,
    tile_shape: Sequence[int] | None = None,
    batch_size: int = 1,
    device=None,
    tta: bool = False,
) -> np.ndarray:
    """Class probabilities of an already normalised image by the overlap-tile strategy.

    Parameters
    ----------
    model : UNet
        Valid or same padding; put in eval mode for the call (its mode is restored).
    image : ndarray, (H, W) or (C, H, W); for a 3D model (Z, Y, X) or (C, Z, Y, X)
        Normalised intensities (see :func:`predict_image` for raw images). Any size.
    tile_shape : sequence of int, optional
        The network's input tile, one side per spatial axis, a valid input shape; default:
        :func:`auto_tile_shape`.
    batch_size : int
        Tiles per forward pass (halved automatically on out-of-memory, then tiles shrink).
    device : str or torch.device, optional
        Moves the model there; default: where the model is.
    tta : bool
        Average the xy plane as it is and turned by 180°
        (:data:`~napari_unet.core.predict.passes.TTA_TRANSFORMS`; also in 3D), each turned back
        before averaging.

    Returns
    -------
    float32 ndarray (num_classes, *spatial), softmax probabilities.

    Examples
    --------
    >>> net = UNet(depth=1, base_channels=2)
    >>> prob = predict_tiled(net, np.random.rand(25, 31).astype(np.float32), tile_shape=(20, 20))
    >>> prob.shape, prob.dtype, bool(np.allclose(prob.sum(0), 1, atol=1e-5))
    ((2, 25, 31), dtype('float32'), True)
    >>> net3d = UNet(depth=1, base_channels=2, ndim=3)
    >>> predict_tiled(net3d, np.random.rand(9, 10, 11).astype(np.float32)).shape
    (2, 9, 10, 11)
    """
    return run_to_end(
        iter_predict_tiled(
            model, image, tile_shape=tile_shape, batch_size=batch_size, device=device, tta=tta
        )
    )


def return_value(gen: Generator):
    """Run a generator to its end, ignoring what it yields; returns its return value.

    Examples
    --------
    >>> def g():
    ...     yield 1
    ...     return 2
    >>> return_value(g())
    2
    """
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def run_to_end(events: Iterator[PredictProgress]) -> np.ndarray:
    """Consume a prediction generator and return the result its last event carries."""
    result = None
    for event in events:
        result = event.result
    return result


