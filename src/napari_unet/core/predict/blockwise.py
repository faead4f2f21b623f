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
whose seed lies in the neighbouring block stays background.

The watershed split and the split between confident cores (``seeds``, which the shipped
``nuclei`` model stores) need each cell whole. With either, each block is predicted and
labelled over itself plus a ``halo`` on every side (default 64 pixels, 32 for a 3D model:
wider than a nucleus) by :func:`~napari_unet.core.predict.postprocess.labels_from_probabilities`,
the whole post-processing as on an image in memory, and keeps its own pixels; a block's cell
joins its neighbour's where the block gave the neighbour's first row beyond the face that cell,
so touching cells stay apart across faces. The labels equal the whole image's wherever each
cell crossing a face (for ``seeds``, each cluster of cells joined above the threshold) lies
within the halo; the price is the halo's prediction: 1.27× the pixels for 1024-pixel blocks,
3.4× for a 3D model's 128³ blocks.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Generator, Sequence
from pathlib import Path

from napari_unet.core.model.unet import UNet
from napari_unet.core.normalize import stored_normalization
from napari_unet.core.predict.blocks import (
    MERGED,
    BlockSpec,
    PlaneView,
    merge_labels,
    regrow_block,
    relabel_block,
    run_block,
    sample_range,
)
from napari_unet.core.predict.postprocess import PostprocessSettings, stored_tta
from napari_unet.core.predict.scales import OWN_SIZE, check_scales
from napari_unet.core.predict.tiled import PredictProgress
from napari_unet.core.predict.tiling import auto_tile_shape, tile_alignment

__all__ = ["halo_for", "iter_predict_to_zarr", "plane_layout", "predict_to_zarr"]

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


def check_blockwise(settings: PostprocessSettings) -> None:
    """Refuse the post-processing that block-wise prediction cannot apply as
    :func:`~napari_unet.core.predict.labels_from_probabilities` does on a whole image: the
    tissue's seeded watershed gives every tissue pixel to a cell, and a tissue's cells are
    larger than any halo around a block."""
    if settings.tissue:
        raise ValueError(
            "postprocess: block-wise (zarr) prediction cannot apply tissue=True (the tissue's "
            "seeded watershed), which needs the whole tissue; predict without it (napari-unet "
            "predict --no-tissue, or tissue=False), or predict an image that fits in memory")


def halo_for(settings: PostprocessSettings, model: UNet, halo: int | None = None,
             ) -> tuple[int, ...]:
    """The context labelled around each block: empty when the settings need no cell whole
    (connected components merge exactly across faces), else ``halo`` pixels (default 64, 32 for
    a 3D model) rounded up to the pooling grid per spatial axis.

    Examples
    --------
    >>> net = UNet(depth=2, base_channels=2)
    >>> halo_for(PostprocessSettings(), net), halo_for(PostprocessSettings(seeds=0.8), net, 30)
    ((), (32, 32))
    """
    check_blockwise(settings)
    whole = settings.watershed or settings.seeds > settings.threshold
    if not whole:
        return ()
    side = (32 if model.ndim == 3 else 64) if halo is None else int(halo)
    if side < 1:
        raise ValueError(f"halo: expected a positive number of pixels, got {halo!r}; the "
                         "watershed and the confident-core split need context around a block")
    return tuple(math.ceil(side / a) * a for a in tile_alignment(model))


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
    halo: int | None = None,
    scales: Sequence[float] = (1.0,),
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
        (e.g. ``min_size=3``) on top.
    spacing : sequence of float, optional
        Voxel size: the regrowth's distances (as on the whole image), recorded in the output's
        attributes.
    scheduler : str or distributed.Client, optional
        A dask distributed scheduler address (``tcp://host:8786``) or client.
    halo : int, optional
        With the watershed or the confident cores: pixels labelled around each block, wider
        than the largest cell (default 64, 32 for a 3D model; see :func:`halo_for`).
    scales : sequence of float
        (1,) only: blocks are predicted at the image's own size. Averaging scales
        (:mod:`napari_unet.core.predict.scales`) would resize every block with its context
        and keep the blocks' seams on the pooling grid at every scale; to average scales,
        predict the image whole. The scales a model stores for colour images do not apply
        here (the log says so).

    Yields ``PredictProgress`` per finished block (the last one, with ``message="done"``, after
    the label merge); returns the output path.
    """
    if check_scales(scales) != OWN_SIZE:
        raise ValueError(
            f"scales: block-wise prediction predicts at the image's own size, got {scales!r}; "
            "give scales=(1,), or predict the image whole (e.g. a TIFF into a folder) to "
            "average several scales"
        )
    model, model_path, metadata = _model(model, metadata, scheduler)
    if ((metadata or {}).get("postprocess") or {}).get("scales") is not None:
        logger.info("block by block at the image's own size: the model's stored scales "
                    "(%s) apply to whole images only", metadata["postprocess"]["scales"])
    source, src_for_tasks = _source(source, scheduler)
    if settings is None:
        settings = PostprocessSettings.from_metadata(metadata, **postprocess)
    if device is not None and scheduler is None:
        from napari_unet.core.device import pick_device

        model.to(pick_device(device))
    model.eval()
    spec, planes = _spec(
        model, source, output, metadata=metadata, channel_axis=channel_axis, block=block,
        tile_shape=tile_shape, batch_size=batch_size, device=device,
        tta=stored_tta(metadata) if tta is None else tta, probabilities=probabilities,
        settings=settings, spacing=spacing, halo=halo_for(settings, model, halo),
        task_model=model_path if scheduler is not None else model, task_source=src_for_tasks)
    keys = _block_keys(spec, planes)
    results = yield from _run_blocks(spec, keys, planes, scheduler)
    _merge_and_regrow(spec, results, keys, spacing)
    yield PredictProgress(len(keys) + 1, len(keys) + 1, planes=planes, message="done")
    return Path(output)


def _model(model, metadata, scheduler):
    """The model (read from its file when a path), its file path (for the workers) and the
    metadata (the file's unless given)."""
    model_path = None
    if isinstance(model, str | Path):
        model_path = str(model)
        from napari_unet.core.io.model_file import load_model

        model, file_meta = load_model(model_path)
        metadata = metadata or file_meta
    if scheduler is not None and model_path is None:
        raise ValueError("model: with a scheduler give the model file path, not a loaded model")
    return model, model_path, metadata


def _source(source, scheduler):
    """The input array (a zarr path opened), and what the block tasks open."""
    import zarr

    if isinstance(source, str | Path):
        src_for_tasks = (str(source), None)
        source = zarr.open_array(str(source), mode="r")
    else:
        src_for_tasks = source
    if scheduler is not None and not isinstance(src_for_tasks, tuple):
        raise ValueError("input: with a scheduler give the path of a zarr array the workers can read")
    return source, src_for_tasks


def _spec(model, source, output, *, metadata, channel_axis, block, tile_shape, batch_size,
          device, tta, probabilities, settings, spacing, halo, task_model, task_source):
    """The output group (arrays created) and the :class:`BlockSpec` of the blocks; the planes."""
    import zarr

    layout = plane_layout(tuple(source.shape), model.in_channels, channel_axis)
    volume = model.ndim == 3
    if volume and not layout.startswith("z"):
        raise ValueError(
            f"input: a 3D model predicts volumes (Z, Y, X) or (Z, C, Y, X), got shape "
            f"{tuple(source.shape)} (layout {layout!r}); use a 2D model for images"
        )
    stacked = layout.startswith("z")
    planes = 1 if volume or not stacked else source.shape[0]
    side = int(block) if block is not None else (128 if volume else 1024)
    blocks = tuple(max(a, math.ceil(side / a) * a) for a in tile_alignment(model))
    norm = stored_normalization(metadata)
    ranges = None if norm is None else [
        sample_range(PlaneView(source, layout, None if volume else z), norm)
        for z in range(planes)]
    spatial = PlaneView(source, layout, None if volume else 0).shape[1:]
    if tile_shape is None:
        around = tuple(b + 2 * h for b, h in zip(blocks, halo or (0,) * len(blocks), strict=True))
        tile_shape = auto_tile_shape(model, around, next(model.parameters()).device)
    group = zarr.open_group(str(output), mode="w")
    z_shape, z_chunk = ((planes,), (1,)) if stacked and not volume else ((), ())
    k = model.num_classes
    if probabilities:
        _create(group, "probabilities", (*z_shape, k, *spatial), (*z_chunk, k, *blocks), "f4")
    _create(group, "labels", (*z_shape, *spatial), (*z_chunk, *blocks), "i4")
    group.attrs["napari_unet"] = {"block": list(blocks), "layout": layout, "tta": bool(tta),
                                  "volume": volume, "halo": list(halo),
                                  "spacing": None if spacing is None else list(spacing)}
    spec = BlockSpec(
        source=task_source, layout=layout, output=str(output), model=task_model,
        device=None if device is None else str(device), tile_shape=tuple(tile_shape),
        batch_size=batch_size, tta=tta, block=blocks, ranges=ranges, settings=settings,
        probabilities=probabilities, num_classes=k, stacked=stacked, volume=volume, halo=halo,
        spacing=None if spacing is None else tuple(spacing),
        extras={"spatial": spatial, "z_shape": z_shape, "z_chunk": z_chunk},
    )  # fmt: skip
    return spec, planes


def _block_keys(spec: BlockSpec, planes: int) -> list[tuple]:
    """The block keys: (z, y0, x0) per plane and 2D block, or the starts of 3D blocks."""
    grid = [range(0, n, b) for n, b in zip(spec.extras["spatial"], spec.block, strict=True)]
    if spec.volume:
        return list(itertools.product(*grid))
    return [(z, *yx) for z in range(planes) for yx in itertools.product(*grid)]


def _run_blocks(spec: BlockSpec, keys, planes: int, scheduler):
    """Run every block here or on the dask cluster, yielding progress; their results."""
    results = {}
    volume = spec.volume
    if scheduler is None:
        for i, key in enumerate(keys):
            results[key] = run_block(spec, *key)
            yield PredictProgress(i + 1, len(keys) + 1, plane=0 if volume else key[0],
                                  planes=planes)
        return results
    from distributed import Client, as_completed

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        futures = [client.submit(run_block, spec, *key, pure=False) for key in keys]
        for i, fut in enumerate(as_completed(futures)):
            res = fut.result()
            results[res["key"]] = res
            yield PredictProgress(i + 1, len(keys) + 1,
                                  plane=0 if volume else res["key"][0], planes=planes)
    finally:
        if client is not scheduler:
            client.close()
    return results


def _merge_and_regrow(spec: BlockSpec, results: dict, keys, spacing) -> None:
    """Join the labels across block faces and relabel every block; then the regrowth (blocks
    with a halo were post-processed whole, regrowth and ``min_size`` included)."""
    import zarr

    settings, spatial = spec.settings, spec.extras["spatial"]
    luts = merge_labels(results, spec.block, 0 if spec.halo else settings.min_size, spec.volume)
    group = zarr.open_group(spec.output, mode="r+")
    regrow = settings.regrow and not spec.halo
    if regrow:  # from the merged labels (a temporary array) into "labels"
        z_shape, z_chunk = spec.extras["z_shape"], spec.extras["z_chunk"]
        _create(group, MERGED, (*z_shape, *spatial), (*z_chunk, *spec.block), "i4")
    for key in keys:
        relabel_block(spec, key, luts[key], spatial, target=MERGED if regrow else "labels")
    if regrow:
        for key in keys:
            regrow_block(spec, key, spatial, settings.regrow, spacing)
        del group[MERGED]


def predict_to_zarr(model, source, output, **options) -> Path:
    """Run :func:`iter_predict_to_zarr` to the end; returns the output path.

    Examples
    --------
    >>> import tempfile, numpy as np, zarr
    >>> out = predict_to_zarr(UNet(depth=1, base_channels=2), np.random.rand(40, 50),
    ...                       tempfile.mkdtemp() + "/out.zarr", block=32, min_size=1)
    >>> zarr.open_group(out)["labels"].shape
    (40, 50)
    """
    path = Path(output)
    for _ in iter_predict_to_zarr(model, source, output, **options):
        pass
    return path
