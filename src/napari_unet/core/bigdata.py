"""Larger-than-memory prediction: numpy, dask or zarr in, zarr out, block by block.

The output is cut into blocks of ``block`` × ``block`` pixels (a multiple of ``2**depth``, aligned
with the output chunks). Each block reads its input with the model's context (mirrored at the
image border), is predicted by the overlap-tile engine and written straight into the zarr store,
so peak memory depends on the block and the tile batch, not on the image; the probabilities equal
those of :func:`napari_unet.core.predict.predict_tiled` on the whole image (valid models).
With a dask distributed ``scheduler`` address the blocks run as tasks on its workers; each worker
loads the model once from the model *file* (the input must then be a zarr array on storage the
workers see, and the output path too).

Instance labels across block borders: each block labels its cells locally with
:func:`napari_unet.core.postprocess.cell_components` (threshold, 4-connected components, holes
filled inside the block; 3-class models grow interior seeds into the border class within the
block) and returns the labels along its four edges. A merge pass joins labels
that touch across a block edge with both pixels in the cell (interior) class, as a graph's
connected components, drops objects smaller than ``min_size`` (sizes summed over blocks) and
renumbers 1..N; a last pass rewrites each block through its lookup table. Connected components
are therefore exact across blocks; holes that straddle a block edge are not filled, a 3-class
border pixel whose seed lies in the neighbouring block stays background, and the optional
watershed split and the regrowth into separation gaps of
:func:`~napari_unet.core.postprocess.labels_from_probabilities` are not applied block-wise.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from napari_unet.core.data import inverted_channels, stored_normalization
from napari_unet.core.model import UNet
from napari_unet.core.postprocess import PostprocessSettings, cell_components
from napari_unet.core.predict import (
    PredictProgress,
    auto_tile_shape,
    iter_predict_region,
    return_value,
)
from napari_unet.core.tiling import region_reader

__all__ = ["BlockSpec", "iter_predict_to_zarr", "plane_layout", "predict_to_zarr"]

logger = logging.getLogger(__name__)


def plane_layout(shape: tuple[int, ...], in_channels: int, channel_axis: int | None) -> str:
    """Axis letters of an input array: "yx", "cyx", "yxc", "zyx", "zcyx" or "zyxc".

    Examples
    --------
    >>> plane_layout((5, 64, 64), 1, None), plane_layout((64, 64, 3), 3, None)
    ('zyx', 'yxc')
    """
    nd = len(shape)
    if channel_axis is not None:
        channel_axis %= nd
    if nd == 2 and in_channels == 1 and channel_axis is None:
        return "yx"
    if nd == 3 and channel_axis is None and in_channels == 1:
        return "zyx"
    for layout in ("cyx", "yxc") if nd == 3 else ("zcyx", "zyxc") if nd == 4 else ():
        c = layout.index("c")
        if (channel_axis is None or channel_axis == c) and shape[c] == in_channels:
            return layout
    raise ValueError(
        f"input: shape {tuple(shape)} does not fit a model with {in_channels} input channel(s) "
        f"(channel_axis={channel_axis}); expected (Y, X), (Z, Y, X), (C, Y, X) or (Z, C, Y, X) "
        f"with C = {in_channels}"
    )


class _PlaneView:
    """One plane of a (Z, [C,] Y, X) array as a lazy (C, Y, X) array (only ``[..., ys, xs]``)."""

    def __init__(self, array, layout: str, z: int = 0) -> None:
        self.array, self.layout, self.z = array, layout, z
        shape = dict(zip(layout, array.shape, strict=True))
        self.shape = (shape.get("c", 1), shape["y"], shape["x"])

    def __getitem__(self, key):
        ys, xs = key[-2], key[-1]
        index = {"z": self.z, "c": slice(None), "y": ys, "x": xs}
        block = np.asarray(self.array[tuple(index[a] for a in self.layout)])
        if "c" not in self.layout:
            return block[None]
        return np.moveaxis(block, -1, 0) if self.layout.endswith("c") else block


@dataclass
class BlockSpec:
    """Everything a block task needs; picklable (for distributed workers)."""

    source: object  # the array, or (zarr path, None) opened on the worker
    layout: str
    output: str
    model: object  # a UNet (local) or a model file path (distributed)
    device: str | None
    tile_shape: tuple[int, int]
    batch_size: int
    tta: bool
    block: int
    lo: np.ndarray  # (Z, C) normalisation lows
    hi: np.ndarray
    settings: PostprocessSettings
    probabilities: bool
    num_classes: int
    stacked: bool
    extras: dict = field(default_factory=dict)


@functools.lru_cache(maxsize=4)
def _load_model_file(path: str, device: str | None) -> UNet:
    from napari_unet.core.device import pick_device
    from napari_unet.core.io import load_model

    model, _meta = load_model(path, device=pick_device(device or "auto"))
    return model.eval()


def _open(source):
    if isinstance(source, tuple):
        import zarr

        return zarr.open_array(source[0], mode="r")
    return source


def _faces(labels: np.ndarray, cell: np.ndarray) -> dict:
    keep = np.where(cell, labels, 0)
    return {"top": keep[0], "bottom": keep[-1], "left": keep[:, 0], "right": keep[:, -1]}


def _run_block(spec: BlockSpec, z: int, y0: int, x0: int) -> dict:
    """Predict one output block, write probabilities and block-local labels, return its edges."""
    import zarr

    model = _load_model_file(spec.model, spec.device) if isinstance(spec.model, str) else spec.model
    view = _PlaneView(_open(spec.source), spec.layout, z)
    h, w = view.shape[1:]
    y1, x1 = min(y0 + spec.block, h), min(x0 + spec.block, w)
    lo, hi = spec.lo[z][:, None, None], spec.hi[z][:, None, None]
    read = region_reader(view, transform=lambda b: (b.astype(np.float32) - lo) / (hi - lo + 1e-6))
    with torch.inference_mode():
        gen = iter_predict_region(
            model, read, (y0, y1, x0, x1),
            tile_shape=spec.tile_shape, batch_size=spec.batch_size, tta=spec.tta,
        )  # fmt: skip
        prob = return_value(gen)
    where = (z,) if spec.stacked else ()
    group = zarr.open_group(spec.output, mode="r+")
    if spec.probabilities:
        group["probabilities"][(*where, slice(None), slice(y0, y1), slice(x0, x1))] = prob
    s = spec.settings
    labels, cell, n = cell_components(prob, threshold=s.threshold, argmax=s.argmax,
                                      fill_holes=s.fill_holes)
    group["labels"][(*where, slice(y0, y1), slice(x0, x1))] = labels
    return {
        "key": (z, y0, x0),
        "n": int(n),
        "counts": np.bincount(labels.ravel(), minlength=n + 1),
        "faces": _faces(labels, cell),
    }


def _merge(results: dict, block: int, min_size: int) -> dict:
    """Lookup tables (block key → local id → final id) joining labels across block edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    keys = sorted(results)
    offset, total = {}, 1
    for k in keys:
        offset[k] = total
        total += results[k]["n"]
    rows, cols = [], []
    for (z, y0, x0) in keys:
        for (dy, dx, mine, theirs) in ((block, 0, "bottom", "top"), (0, block, "right", "left")):
            other = (z, y0 + dy, x0 + dx)
            if other not in results:
                continue
            a, b = results[(z, y0, x0)]["faces"][mine], results[other]["faces"][theirs]
            both = (a > 0) & (b > 0)
            rows.append(a[both] + offset[(z, y0, x0)] - 1)
            cols.append(b[both] + offset[other] - 1)
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(total, total))
    _n, comp = connected_components(graph, directed=False)
    sizes = np.zeros(total, np.int64)
    for k in keys:
        sizes[offset[k] : offset[k] + results[k]["n"]] = results[k]["counts"][1:]
    comp_size = np.bincount(comp, weights=sizes)
    keep = comp_size >= max(1, min_size)
    keep[comp[0]] = False  # node 0 is the background
    final = np.zeros(len(comp_size), np.int32)
    final[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return {k: np.concatenate([[0], final[comp[offset[k] : offset[k] + results[k]["n"]]]])
            for k in keys}  # fmt: skip


def _relabel_block(output: str, key, lut: np.ndarray, block: int, stacked: bool) -> None:
    import zarr

    z, y0, x0 = key
    arr = zarr.open_group(output, mode="r+")["labels"]
    where = (z,) if stacked else ()
    index = (*where, slice(y0, y0 + block), slice(x0, x0 + block))
    arr[index] = lut[np.asarray(arr[index])]


def _percentiles(view: _PlaneView, low: float, high: float, max_pixels: int = 2**22,
                 invert=False):
    """Per-channel percentiles of a plane from a strided subsample of at most ``max_pixels``;
    swapped for the channels ``invert`` inverts (:func:`~napari_unet.core.data.inverted_channels`
    on the subsample's median), so that ``(x - lo) / (hi - lo)`` maps them like ``normalize``."""
    h, w = view.shape[1:]
    step = max(1, math.ceil(math.sqrt(h * w / max_pixels)))
    sample = np.asarray(view[..., slice(None, None, step), slice(None, None, step)], np.float32)
    lo, med, hi = np.percentile(sample.reshape(sample.shape[0], -1), [low, 50, high], axis=1)
    flip = inverted_channels(med, lo, hi, invert)
    lo, hi = np.where(flip, hi, lo), np.where(flip, lo, hi)
    return lo.astype(np.float32), hi.astype(np.float32)


def _create(group, name, shape, chunks, dtype):
    create = getattr(group, "create_array", None) or group.create_dataset  # zarr 3 / zarr 2
    return create(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0)


def iter_predict_to_zarr(
    model: UNet | str | Path,
    source,
    output: str | Path,
    *,
    metadata: dict | None = None,
    channel_axis: int | None = None,
    block: int = 1024,
    tile_shape: tuple[int, int] | None = None,
    batch_size: int = 1,
    device=None,
    tta: bool = False,
    probabilities: bool = True,
    settings: PostprocessSettings | None = None,
    scheduler: str | object | None = None,
    **postprocess,
) -> Generator[PredictProgress, None, Path]:
    """Predict a 2D image or a (Z, Y, X) stack block by block into a zarr group at ``output``.

    Parameters
    ----------
    model : UNet or path
        A model file path is required with ``scheduler`` (workers load it once each).
    source : numpy, dask or zarr array, or path of a zarr array
        (Y, X), (C, Y, X), (Y, X, C), (Z, Y, X), (Z, C, Y, X) or (Z, Y, X, C).
    output : path
        The zarr group written: ``labels`` (int32, [Z,] Y, X) and, if ``probabilities``,
        ``probabilities`` (float32, [Z,] num_classes, Y, X), chunks of ``block`` pixels.
    metadata : dict, optional
        The model file's metadata (normalisation); read from the file when ``model`` is a path.
        Percentiles are taken per plane from a strided subsample (≤ 4 Mpixels).
    block : int
        Output block side, rounded up to a multiple of ``2**depth``.
    settings : PostprocessSettings, optional
        Default: the model's stored settings (``metadata["postprocess"]``) with ``**postprocess``
        (e.g. ``min_size=3``) on top. Watershed and regrowth are not applied block-wise.
    scheduler : str or distributed.Client, optional
        A dask distributed scheduler address (``tcp://host:8786``) or client.

    Yields ``PredictProgress`` per finished block (the last one, with ``message="done"``, after
    the label merge); returns the output path.
    """
    import zarr

    model_path = None
    if isinstance(model, str | Path):
        model_path = str(model)
        from napari_unet.core.io import load_model

        model, file_meta = load_model(model_path)
        metadata = metadata or file_meta
    if scheduler is not None and model_path is None:
        raise ValueError("model: with a scheduler give the model file path, not a loaded model")
    if isinstance(source, str | Path):
        src_for_tasks = (str(source), None)
        source = zarr.open_array(str(source), mode="r")
    else:
        src_for_tasks = source
    if scheduler is not None and not isinstance(src_for_tasks, tuple):
        raise ValueError("input: with a scheduler give the path of a zarr array the workers can read")
    if settings is None:
        settings = PostprocessSettings.from_metadata(metadata, **postprocess)
    if settings.watershed or settings.regrow:
        logger.info("zarr output: watershed and regrowth are not applied block-wise")
    if device is not None and scheduler is None:
        from napari_unet.core.device import pick_device

        model.to(pick_device(device))
    model.eval()
    layout = plane_layout(tuple(source.shape), model.in_channels, channel_axis)
    stacked = layout.startswith("z")
    planes = source.shape[0] if stacked else 1
    align = 2**model.depth
    block = max(align, math.ceil(int(block) / align) * align)
    norm = stored_normalization(metadata)
    lo_hi = [
        _percentiles(_PlaneView(source, layout, z), norm["low"], norm["high"],
                     invert=norm.get("invert", False))
        if norm is not None
        else (np.zeros(model.in_channels, np.float32), np.ones(model.in_channels, np.float32) - 1e-6)
        for z in range(planes)
    ]
    view = _PlaneView(source, layout)
    h, w = view.shape[1:]
    if tile_shape is None:
        tile_shape = auto_tile_shape(model, (block, block), next(model.parameters()).device)
    group = zarr.open_group(str(output), mode="w")
    z_shape, z_chunk = ((planes,), (1,)) if stacked else ((), ())
    k = model.num_classes
    if probabilities:
        _create(group, "probabilities", (*z_shape, k, h, w), (*z_chunk, k, block, block), "f4")
    _create(group, "labels", (*z_shape, h, w), (*z_chunk, block, block), "i4")
    group.attrs["napari_unet"] = {"block": block, "layout": layout, "tta": bool(tta)}
    spec = BlockSpec(
        source=src_for_tasks, layout=layout, output=str(output),
        model=model_path if scheduler is not None else model,
        device=None if device is None else str(device), tile_shape=tuple(tile_shape),
        batch_size=batch_size, tta=tta, block=block,
        lo=np.stack([a for a, _ in lo_hi]), hi=np.stack([b for _, b in lo_hi]),
        settings=settings, probabilities=probabilities,
        num_classes=k, stacked=stacked,
    )  # fmt: skip
    keys = [(z, y, x) for z in range(planes) for y in range(0, h, block) for x in range(0, w, block)]
    results = {}
    if scheduler is None:
        for i, key in enumerate(keys):
            results[key] = _run_block(spec, *key)
            yield PredictProgress(i + 1, len(keys) + 1, plane=key[0], planes=planes)
    else:
        from distributed import Client, as_completed

        client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
        try:
            futures = [client.submit(_run_block, spec, *key, pure=False) for key in keys]
            for i, fut in enumerate(as_completed(futures)):
                res = fut.result()
                results[res["key"]] = res
                yield PredictProgress(i + 1, len(keys) + 1, plane=res["key"][0], planes=planes)
        finally:
            if client is not scheduler:
                client.close()
    luts = _merge(results, block, settings.min_size)
    for key in keys:
        _relabel_block(str(output), key, luts[key], block, stacked)
    yield PredictProgress(len(keys) + 1, len(keys) + 1, planes=planes, message="done")
    return Path(output)


def predict_to_zarr(model, source, output, **options) -> Path:
    """Run :func:`iter_predict_to_zarr` to the end; returns the output path.

    Examples
    --------
    >>> import tempfile, zarr
    >>> out = predict_to_zarr(UNet(depth=1, base_channels=2), np.random.rand(40, 50),
    ...                       tempfile.mkdtemp() + "/out.zarr", block=32, min_size=1)
    >>> zarr.open_group(out)["labels"].shape
    (40, 50)
    """
    path = Path(output)
    for _ in iter_predict_to_zarr(model, source, output, **options):
        pass
    return path
