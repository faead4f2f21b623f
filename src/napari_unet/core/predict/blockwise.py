"""Larger-than-memory prediction: numpy, dask or zarr in, zarr out, block by block.

The output is cut into blocks of ``block`` pixels per spatial axis (a multiple of the pooling
grid, :func:`~napari_unet.core.predict.tiling.tile_alignment`, aligned with the output chunks): 2D
blocks per plane for a 2D model (a (Z, Y, X) stack is a stack of planes), 3D blocks in z, y and
x for a 3D model (the volume is one volume). Each block reads its input with the model's context (mirrored at the
image border), is predicted by the overlap-tile engine and written straight into the zarr store,
so peak memory depends on the block and the tile batch, not on the image; the probabilities equal
those of :func:`napari_unet.core.predict.predict_tiled` on the whole image (valid models).
With a dask distributed ``scheduler`` address the blocks run as tasks on its workers; each worker
loads the model once from the model *file* (the input must then be a zarr array on storage the
workers see, and the output path too).

Normalisation is :func:`~napari_unet.core.normalize.normalize`'s mapping (the same functions),
its percentiles taken once per plane (or volume) on the whole image up to 4 M pixels, on a
strided subsample of that many beyond.

Instance labels across block borders: each block labels its cells locally with
:func:`napari_unet.core.predict.postprocess.cell_components` (threshold, 4-connected components,
holes filled inside the block; 3-class models grow interior seeds into the border class within
the block) and returns the labels on its faces (four edges in 2D, six faces in 3D). A merge pass
joins labels that touch across a block face with both pixels in the cell (interior) class, as a
graph's connected components, drops objects smaller than ``min_size`` (sizes summed over blocks)
and renumbers 1..N; a last pass rewrites each block through its lookup table, then the
regrowth into separation gaps runs block by block on the merged labels, reading the
regrowth's reach around each block, as on the whole image. Connected components are therefore
exact across blocks; holes that straddle a block edge are not filled and a 3-class border pixel
whose seed lies in the neighbouring block stays background. The watershed split and the split
between confident cores (``seeds``) need each cell whole: block-wise prediction refuses them
(a ValueError naming the options that switch them off).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from napari_unet.core.model.unet import UNet
from napari_unet.core.normalize import apply_range, channel_range, stored_normalization
from napari_unet.core.predict.postprocess import (
    PostprocessSettings,
    cell_components,
    regrow_into_gaps,
    regrow_reach,
)
from napari_unet.core.predict.tiled import PredictProgress, iter_predict_region, return_value
from napari_unet.core.predict.tiling import auto_tile_shape, region_reader, tile_alignment

__all__ = ["BlockSpec", "iter_predict_to_zarr", "plane_layout", "predict_to_zarr"]

logger = logging.getLogger(__name__)

#: the temporary array of the merged labels that the regrowth reads
MERGED = "labels_merged"


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
    """Plane ``z`` of a ([Z,] [C,] Y, X) array as a lazy (C, Y, X) array, or with ``z=None``
    the whole volume as (C, Z, Y, X) (3D models); only ``[..., *spatial slices]`` reads."""

    def __init__(self, array, layout: str, z: int | None = 0) -> None:
        self.array, self.layout, self.z = array, layout, z
        shape = dict(zip(layout, array.shape, strict=True))
        self.spatial = "yx" if z is not None else "zyx"
        self.shape = (shape.get("c", 1), *(shape[a] for a in self.spatial))

    def __getitem__(self, key):
        index = {"z": self.z, "c": slice(None)}
        index.update(zip(self.spatial, key[-len(self.spatial) :], strict=True))
        block = np.asarray(self.array[tuple(index[a] for a in self.layout)])
        if "c" not in self.layout:
            return block[None]
        kept = [a for a in self.layout if a != "z" or self.z is None]
        return np.moveaxis(block, kept.index("c"), 0)


@dataclass
class BlockSpec:
    """Everything a block task needs; picklable (for distributed workers).

    Block keys are (z, y0, x0): a plane and a 2D block (2D model), or the start of a 3D block
    (``volume``, a 3D model)."""

    source: object  # the array, or (zarr path, None) opened on the worker
    layout: str
    output: str
    model: object  # a UNet (local) or a model file path (distributed)
    device: str | None
    tile_shape: tuple[int, ...]
    batch_size: int
    tta: bool
    block: tuple[int, ...]  # one side per spatial axis
    #: per plane (one for a volume) the (lo, hi, flip) of normalize's mapping
    #: (:func:`napari_unet.core.normalize.channel_range`), or None: no normalisation
    ranges: list | None
    settings: PostprocessSettings
    probabilities: bool
    num_classes: int
    stacked: bool
    volume: bool = False
    extras: dict = field(default_factory=dict)


@functools.lru_cache(maxsize=4)
def _load_model_file(path: str, device: str | None) -> UNet:
    from napari_unet.core.device import pick_device
    from napari_unet.core.io.model_file import load_model

    model, _meta = load_model(path, device=pick_device(device or "auto"))
    return model.eval()


def _open(source):
    if isinstance(source, tuple):
        import zarr

        return zarr.open_array(source[0], mode="r")
    return source


def _faces(labels: np.ndarray, cell: np.ndarray) -> dict:
    """Labels on the low and high face of each spatial axis (0 outside the cell class)."""
    keep = np.where(cell, labels, 0)
    return {(axis, side): np.take(keep, 0 if side == 0 else -1, axis=axis)
            for axis in range(keep.ndim) for side in (0, 1)}  # fmt: skip


def _spatial_key(spec: BlockSpec, key) -> tuple[int, ...]:
    return tuple(key) if spec.volume else tuple(key[1:])


def _out_index(spec: BlockSpec, key, stops) -> tuple:
    """The output array index of a block (plane index first for a stack of planes)."""
    where = (key[0],) if spec.stacked and not spec.volume else ()
    starts = _spatial_key(spec, key)
    return (*where, *(slice(a, b) for a, b in zip(starts, stops, strict=True)))


def _run_block(spec: BlockSpec, z: int, y0: int, x0: int) -> dict:
    """Predict one output block, write probabilities and block-local labels, return its faces."""
    import zarr

    key = (z, y0, x0)
    model = _load_model_file(spec.model, spec.device) if isinstance(spec.model, str) else spec.model
    view = _PlaneView(_open(spec.source), spec.layout, None if spec.volume else z)
    starts = _spatial_key(spec, key)
    stops = [min(a + b, n) for a, b, n in zip(starts, spec.block, view.shape[1:], strict=True)]
    nsp = len(starts)
    read = region_reader(view, transform=_normalizer(spec, 0 if spec.volume else z, nsp))
    region = tuple(v for a, b in zip(starts, stops, strict=True) for v in (a, b))
    with torch.inference_mode():
        gen = iter_predict_region(
            model, read, region,
            tile_shape=spec.tile_shape, batch_size=spec.batch_size, tta=spec.tta,
        )  # fmt: skip
        prob = return_value(gen)
    index = _out_index(spec, key, stops)
    group = zarr.open_group(spec.output, mode="r+")
    if spec.probabilities:
        where = index[:1] if len(index) > nsp else ()
        group["probabilities"][(*where, slice(None), *index[len(where) :])] = prob
    s = spec.settings
    labels, cell, n = cell_components(prob, threshold=s.threshold, argmax=s.argmax,
                                      fill_holes=s.fill_holes)
    group["labels"][index] = labels
    out = {
        "key": key,
        "n": int(n),
        "counts": np.bincount(labels.ravel(), minlength=n + 1),
        "faces": _faces(labels, cell),
    }
    return out


def _merge(results: dict, block: tuple[int, ...], min_size: int, volume: bool = False) -> dict:
    """Lookup tables (block key → local id → final id) joining labels across block faces;
    objects of fewer than ``min_size`` pixels are dropped."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    keys = sorted(results)
    offset, total = {}, 1
    for k in keys:
        offset[k] = total
        total += results[k]["n"]
    rows, cols = [], []
    first = 0 if volume else 1  # key index of the first spatial axis
    for key in keys:
        for axis, step in enumerate(block):
            other = list(key)
            other[first + axis] += step
            other = tuple(other)
            if other not in results:
                continue
            a, b = results[key]["faces"][(axis, 1)], results[other]["faces"][(axis, 0)]
            both = (a > 0) & (b > 0)
            rows.append(a[both] + offset[key] - 1)
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


def _relabel_block(spec: BlockSpec, key, lut: np.ndarray, shape, *, target="labels") -> None:
    """Rewrite a block's local labels as the merged ones (into ``target``)."""
    import zarr

    group = zarr.open_group(spec.output, mode="r+")
    starts = _spatial_key(spec, key)
    stops = [min(a + b, n) for a, b, n in zip(starts, spec.block, shape, strict=True)]
    index = _out_index(spec, key, stops)
    group[target][index] = lut[np.asarray(group["labels"][index])]


def _regrow_block(spec: BlockSpec, key, shape, distance: int, spacing) -> None:
    """Regrow a block's cells into their separation gaps as
    :func:`~napari_unet.core.predict.postprocess.regrow_into_gaps` does on the whole image: the
    merged labels are read with the regrowth's reach around the block (clipped at the image
    border, as the whole image is), the block written into ``labels``."""
    import zarr

    group = zarr.open_group(spec.output, mode="r+")
    starts = _spatial_key(spec, key)
    stops = [min(a + b, n) for a, b, n in zip(starts, spec.block, shape, strict=True)]
    reach = regrow_reach(distance, spacing, len(starts))
    lo = [max(a - r, 0) for a, r in zip(starts, reach, strict=True)]
    hi = [min(b + r, n) for b, r, n in zip(stops, reach, shape, strict=True)]
    where = (key[0],) if spec.stacked and not spec.volume else ()
    around = np.asarray(group[MERGED][(*where, *(slice(a, b) for a, b in zip(lo, hi,
                                                                            strict=True)))])
    grown = regrow_into_gaps(around, distance, spacing=spacing)
    inner = tuple(slice(a - q, b - q) for a, b, q in zip(starts, stops, lo, strict=True))
    group["labels"][_out_index(spec, key, stops)] = grown[inner]


def _check_blockwise(settings: PostprocessSettings) -> None:
    """Refuse the post-processing that block-wise prediction cannot apply as
    :func:`~napari_unet.core.predict.labels_from_probabilities` does on a whole image: the
    watershed split and the split at confident cores need each cell whole."""
    cannot = [name for name, on in (("watershed=True", settings.watershed),
                                    (f"seeds={settings.seeds:g} (the split at confident cores)",
                                     settings.seeds > settings.threshold)) if on]
    if cannot:
        raise ValueError(
            f"postprocess: block-wise (zarr) prediction cannot apply {' and '.join(cannot)}, "
            "which need each cell whole; predict without them (napari-unet predict "
            "--no-watershed --seeds 0, or watershed=False, seeds=0), or predict an image "
            "that fits in memory")


def _sample_range(view: _PlaneView, norm: dict, max_pixels: int = 2**22):
    """``normalize``'s (lo, hi, flip) of a plane (or volume), from a strided subsample of at
    most ``max_pixels`` read slab by slab along the first spatial axis (memory stays small);
    an image of at most ``max_pixels`` is read whole, so its mapping is exactly that of
    :func:`~napari_unet.core.normalize.normalize` on the whole image."""
    sizes = view.shape[1:]
    step = max(1, math.ceil((math.prod(sizes) / max_pixels) ** (1 / len(sizes))))
    rest = (slice(None, None, step),) * (len(sizes) - 1)
    slabs = [np.asarray(view[(Ellipsis, slice(a, min(a + 64 * step, sizes[0]), step), *rest)],
                        np.float32) for a in range(0, sizes[0], 64 * step)]  # fmt: skip
    sample = np.concatenate(slabs, axis=1)
    if step > 1:
        logger.info("normalisation percentiles from a 1/%d subsample per axis (%d pixels)",
                    step, sample[0].size)
    return channel_range(sample, low=norm["low"], high=norm["high"], channel_axis=0,
                         invert=norm.get("invert", False))


def _normalizer(spec: BlockSpec, plane: int, nsp: int):
    """The block transform: ``normalize``'s mapping of the plane, per channel."""
    if spec.ranges is None:
        return lambda b: np.asarray(b, dtype=np.float32)
    shape = (-1, *[1] * nsp)
    lo, hi, flip = (None if v is None else np.reshape(v, shape) for v in spec.ranges[plane])
    return lambda b: apply_range(b.astype(np.float32), lo, hi, flip)


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
    block: int | None = None,
    tile_shape: tuple[int, ...] | None = None,
    batch_size: int = 1,
    device=None,
    tta: bool | None = None,
    probabilities: bool = True,
    settings: PostprocessSettings | None = None,
    scheduler: str | object | None = None,
    spacing=None,
    **postprocess,
) -> Generator[PredictProgress, None, Path]:
    """Predict a 2D image, a (Z, Y, X) stack (2D model) or a volume (3D model) block by block
    into a zarr group at ``output``.

    Parameters
    ----------
    model : UNet or path
        A model file path is required with ``scheduler`` (workers load it once each).
    source : numpy, dask or zarr array, or path of a zarr array
        (Y, X), (C, Y, X), (Y, X, C), (Z, Y, X), (Z, C, Y, X) or (Z, Y, X, C); a 3D model
        takes the (Z, ...) forms as volumes.
    output : path
        The zarr group written: ``labels`` (int32, [Z,] Y, X) and, if ``probabilities``,
        ``probabilities`` (float32, [Z,] num_classes, Y, X) for planes, (num_classes, Z, Y, X)
        for a volume; chunks of ``block`` pixels.
    metadata : dict, optional
        The model file's metadata (normalisation); read from the file when ``model`` is a path.
        Percentiles are taken per plane (2D model) or over the volume (3D model) from a strided
        subsample (≤ 4 M pixels).
    block : int, optional
        Output block side (every spatial axis), rounded up to a multiple of the pooling grid;
        default 1024 for a 2D model, 128 for a 3D one. Peak memory follows the block, not the
        image.
    tta : bool, optional
        Test-time augmentation (the image as it is and turned by 180°, averaged); default the model's stored choice
        (:func:`napari_unet.core.predict.postprocess.stored_tta`).
    settings : PostprocessSettings, optional
        Default: the model's stored settings (``metadata["postprocess"]``) with ``**postprocess``
        (e.g. ``min_size=3``) on top. The watershed and the split at confident cores are
        refused (ValueError): give ``watershed=False, seeds=0``.
    spacing : sequence of float, optional
        Voxel size: the regrowth's distances (as on the whole image), recorded in the output's
        attributes.
    scheduler : str or distributed.Client, optional
        A dask distributed scheduler address (``tcp://host:8786``) or client.

    Yields ``PredictProgress`` per finished block (the last one, with ``message="done"``, after
    the label merge); returns the output path.
    """
    import zarr

    model_path = None
    if isinstance(model, str | Path):
        model_path = str(model)
        from napari_unet.core.io.model_file import load_model

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
    if tta is None:
        from napari_unet.core.predict.postprocess import stored_tta

        tta = stored_tta(metadata)
    _check_blockwise(settings)
    if device is not None and scheduler is None:
        from napari_unet.core.device import pick_device

        model.to(pick_device(device))
    model.eval()
    layout = plane_layout(tuple(source.shape), model.in_channels, channel_axis)
    volume = model.ndim == 3
    if volume and not layout.startswith("z"):
        raise ValueError(
            f"input: a 3D model predicts volumes (Z, Y, X) or (Z, C, Y, X), got shape "
            f"{tuple(source.shape)} (layout {layout!r}); use a 2D model for images"
        )
    stacked = layout.startswith("z")
    planes = 1 if volume or not stacked else source.shape[0]
    align = tile_alignment(model)
    side = int(block) if block is not None else (128 if volume else 1024)
    blocks = tuple(max(a, math.ceil(side / a) * a) for a in align)
    norm = stored_normalization(metadata)
    ranges = None if norm is None else [
        _sample_range(_PlaneView(source, layout, None if volume else z), norm)
        for z in range(planes)]
    view = _PlaneView(source, layout, None if volume else 0)
    spatial = view.shape[1:]
    if tile_shape is None:
        tile_shape = auto_tile_shape(model, blocks, next(model.parameters()).device)
    group = zarr.open_group(str(output), mode="w")
    z_shape, z_chunk = ((planes,), (1,)) if stacked and not volume else ((), ())
    k = model.num_classes
    if probabilities:
        _create(group, "probabilities", (*z_shape, k, *spatial), (*z_chunk, k, *blocks), "f4")
    _create(group, "labels", (*z_shape, *spatial), (*z_chunk, *blocks), "i4")
    group.attrs["napari_unet"] = {"block": list(blocks), "layout": layout, "tta": bool(tta),
                                  "volume": volume,
                                  "spacing": None if spacing is None else list(spacing)}
    spec = BlockSpec(
        source=src_for_tasks, layout=layout, output=str(output),
        model=model_path if scheduler is not None else model,
        device=None if device is None else str(device), tile_shape=tuple(tile_shape),
        batch_size=batch_size, tta=tta, block=blocks,
        ranges=ranges,
        settings=settings, probabilities=probabilities,
        num_classes=k, stacked=stacked, volume=volume,
    )  # fmt: skip
    grid = [range(0, n, b) for n, b in zip(spatial, blocks, strict=True)]
    if volume:
        keys = list(itertools.product(*grid))
    else:
        keys = [(z, *yx) for z in range(planes) for yx in itertools.product(*grid)]
    results = {}
    if scheduler is None:
        for i, key in enumerate(keys):
            results[key] = _run_block(spec, *key)
            yield PredictProgress(i + 1, len(keys) + 1, plane=0 if volume else key[0],
                                  planes=planes)
    else:
        from distributed import Client, as_completed

        client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
        try:
            futures = [client.submit(_run_block, spec, *key, pure=False) for key in keys]
            for i, fut in enumerate(as_completed(futures)):
                res = fut.result()
                results[res["key"]] = res
                yield PredictProgress(i + 1, len(keys) + 1,
                                      plane=0 if volume else res["key"][0], planes=planes)
        finally:
            if client is not scheduler:
                client.close()
    luts = _merge(results, blocks, settings.min_size, volume)
    if settings.regrow:  # from the merged labels (a temporary array) into "labels"
        _create(group, MERGED, (*z_shape, *spatial), (*z_chunk, *blocks), "i4")
    for key in keys:
        _relabel_block(spec, key, luts[key], spatial,
                       target=MERGED if settings.regrow else "labels")
    if settings.regrow:
        for key in keys:
            _regrow_block(spec, key, spatial, settings.regrow, spacing)
        del group[MERGED]
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
