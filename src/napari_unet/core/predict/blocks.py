"""The work of one block of a block-wise prediction (:mod:`napari_unet.core.predict.blockwise`):
read it with the model's context, normalise, predict, label the cells locally and return the
labels on its faces; then merge the labels across block faces, relabel every block and regrow
the cells into their separation gaps. Every function takes a picklable :class:`BlockSpec`, so
the blocks can run as tasks on a dask cluster.

With a ``halo`` (the splits that need each cell whole: the watershed, the confident cores) a
block is predicted and labelled by
:func:`~napari_unet.core.predict.postprocess.labels_from_probabilities` over itself plus the halo
on every side, and keeps its own pixels; besides its faces it returns the labels it gave the
first row (plane) beyond each face, which the merge links with the neighbour's own labels there.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from napari_unet.core.model.unet import UNet
from napari_unet.core.normalize import apply_range, channel_range
from napari_unet.core.predict.postprocess import (
    PostprocessSettings,
    cell_components,
    regrow_into_gaps,
    regrow_reach,
)
from napari_unet.core.predict.tiled import iter_predict_region, return_value
from napari_unet.core.predict.tiling import region_reader

__all__ = ["MERGED", "BlockSpec", "PlaneView", "best_links", "beyond", "block_normalizer",
           "faces", "load_model_file", "merge_labels", "open_source", "out_index", "regrow_block",
           "relabel_block", "run_block", "sample_range", "spatial_key"]

logger = logging.getLogger(__name__)

#: the temporary array of the merged labels that the regrowth reads
MERGED = "labels_merged"


class PlaneView:
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
    #: pixels of context labelled around a block per spatial axis (empty: none, labels merged
    #: by connected components across the faces)
    halo: tuple[int, ...] = ()
    #: voxel size, for the distances of the post-processing
    spacing: tuple[float, ...] | None = None
    extras: dict = field(default_factory=dict)


@functools.lru_cache(maxsize=4)
def load_model_file(path: str, device: str | None) -> UNet:
    """Load a model file on the chosen device (``None``: automatic), in eval mode."""
    from napari_unet.core.device import pick_device
    from napari_unet.core.io.model_file import load_model

    model, _meta = load_model(path, device=pick_device(device or "auto"))
    return model.eval()


def open_source(source):
    """The array to read blocks from: a ``(path, component)`` pair opens the zarr array read-only."""
    if isinstance(source, tuple):
        import zarr

        return zarr.open_array(source[0], mode="r")
    return source


def faces(labels: np.ndarray, cell: np.ndarray) -> dict:
    """Labels on the low and high face of each spatial axis (0 outside the cell class)."""
    keep = np.where(cell, labels, 0)
    return {(axis, side): np.take(keep, 0 if side == 0 else -1, axis=axis)
            for axis in range(keep.ndim) for side in (0, 1)}  # fmt: skip


def spatial_key(spec: BlockSpec, key) -> tuple[int, ...]:
    """A block's spatial position (the plane index dropped for a stack of planes)."""
    return tuple(key) if spec.volume else tuple(key[1:])


def out_index(spec: BlockSpec, key, stops) -> tuple:
    """The output array index of a block (plane index first for a stack of planes)."""
    where = (key[0],) if spec.stacked and not spec.volume else ()
    starts = spatial_key(spec, key)
    return (*where, *(slice(a, b) for a, b in zip(starts, stops, strict=True)))


def run_block(spec: BlockSpec, z: int, y0: int, x0: int) -> dict:
    """Predict one output block, write probabilities and block-local labels, return its faces
    (and, with a halo, the labels it gave the row beyond each face: ``"beyond"``)."""
    import zarr

    key = (z, y0, x0)
    model = load_model_file(spec.model, spec.device) if isinstance(spec.model, str) else spec.model
    view = PlaneView(open_source(spec.source), spec.layout, None if spec.volume else z)
    starts = spatial_key(spec, key)
    stops = [min(a + b, n) for a, b, n in zip(starts, spec.block, view.shape[1:], strict=True)]
    nsp = len(starts)
    halo = spec.halo or (0,) * nsp
    lo = [max(a - h, 0) for a, h in zip(starts, halo, strict=True)]
    hi = [min(b + h, n) for b, h, n in zip(stops, halo, view.shape[1:], strict=True)]
    read = region_reader(view, transform=block_normalizer(spec, 0 if spec.volume else z, nsp))
    region = tuple(v for a, b in zip(lo, hi, strict=True) for v in (a, b))
    with torch.inference_mode():
        gen = iter_predict_region(
            model, read, region,
            tile_shape=spec.tile_shape, batch_size=spec.batch_size, tta=spec.tta,
        )  # fmt: skip
        around = return_value(gen)
    inner = tuple(slice(a - q, b - q) for a, b, q in zip(starts, stops, lo, strict=True))
    prob = around[(slice(None), *inner)]
    index = out_index(spec, key, stops)
    group = zarr.open_group(spec.output, mode="r+")
    if spec.probabilities:
        where = index[:1] if len(index) > nsp else ()
        group["probabilities"][(*where, slice(None), *index[len(where) :])] = prob
    s = spec.settings
    if spec.halo:
        labelled = s.labels(around, spacing=spec.spacing)
        labels, cell, n = labelled[inner], None, int(labelled.max())
    else:
        labels, cell, n = cell_components(prob, threshold=s.threshold, argmax=s.argmax,
                                          fill_holes=s.fill_holes)
    group["labels"][index] = labels
    out = {
        "key": key,
        "n": int(n),
        "counts": np.bincount(labels.ravel(), minlength=n + 1),
        "faces": faces(labels, labels > 0 if cell is None else cell),
    }
    if spec.halo:
        out["beyond"] = beyond(labelled, inner)
    return out


def beyond(labelled: np.ndarray, inner: tuple[slice, ...]) -> dict:
    """The labels a block gave the first row (plane) outside its own pixels, past the low and
    high face of each spatial axis, over the extent of its face (None where the image ends).

    Examples
    --------
    >>> lab = np.arange(16).reshape(4, 4)
    >>> beyond(lab, (slice(1, 3), slice(0, 4)))[(0, 1)].tolist()
    [12, 13, 14, 15]
    """
    out = {}
    for axis in range(labelled.ndim):
        face = list(inner)
        for side, row in ((0, inner[axis].start - 1), (1, inner[axis].stop)):
            inside = 0 <= row < labelled.shape[axis]
            face[axis] = row
            out[(axis, side)] = labelled[tuple(face)] if inside else None
    return out


def merge_labels(results: dict, block: tuple[int, ...], min_size: int, volume: bool = False) -> dict:
    """Lookup tables (block key → local id → final id) joining labels across block faces;
    objects of fewer than ``min_size`` pixels are dropped.

    Without a halo two labels join where they touch across a face (both pixels in the cell
    class). With one (results with ``"beyond"``), both blocks labelled the two rows at the face
    (each saw the cells there whole): a block's label joins the neighbour's label it shares
    most of those pixels with, and the other way round (:func:`best_links`), so cells touching
    across a face stay apart even where the two blocks drew the line between them apart."""
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
            mine, theirs = results[key], results[other]
            if "beyond" in mine:  # the two rows at the face, as each block labelled them
                a, b = best_links(
                    np.concatenate([mine["beyond"][(axis, 1)].ravel(),
                                    mine["faces"][(axis, 1)].ravel()]),
                    np.concatenate([theirs["faces"][(axis, 0)].ravel(),
                                    theirs["beyond"][(axis, 0)].ravel()]))
            else:
                a, b = mine["faces"][(axis, 1)], theirs["faces"][(axis, 0)]
                both = (a > 0) & (b > 0)
                a, b = a[both], b[both]
            rows.append(a + offset[key] - 1)
            cols.append(b + offset[other] - 1)
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


def best_links(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The id pairs ``(a[i], b[i])`` (both non-zero) in which each id is the other's most
    frequent partner: the same pixels labelled by two blocks, a label matched to the one it
    shares most pixels with, both ways (where the blocks drew the line between two touching
    cells apart, the minority pixels link nothing).

    Examples
    --------
    >>> a, b = best_links(np.array([1, 1, 1, 2, 2]), np.array([5, 5, 6, 6, 6]))
    >>> sorted(zip(a.tolist(), b.tolist()))
    [(1, 5), (2, 6)]
    """
    both = (a > 0) & (b > 0)
    if not both.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs, counts = np.unique(np.stack([a[both], b[both]]).astype(np.int64), axis=1,
                              return_counts=True)
    keep = np.ones(len(counts), bool)
    for side in (0, 1):  # per id of this side, its pair of the highest count
        order = np.lexsort((-counts, pairs[side]))
        ids = pairs[side][order]
        first = np.ones(len(order), bool)
        first[1:] = ids[1:] != ids[:-1]
        best = np.zeros(len(counts), bool)
        best[order[first]] = True
        keep &= best
    return pairs[0][keep], pairs[1][keep]


def relabel_block(spec: BlockSpec, key, lut: np.ndarray, shape, *, target="labels") -> None:
    """Rewrite a block's local labels as the merged ones (into ``target``)."""
    import zarr

    group = zarr.open_group(spec.output, mode="r+")
    starts = spatial_key(spec, key)
    stops = [min(a + b, n) for a, b, n in zip(starts, spec.block, shape, strict=True)]
    index = out_index(spec, key, stops)
    group[target][index] = lut[np.asarray(group["labels"][index])]


def regrow_block(spec: BlockSpec, key, shape, distance: int, spacing) -> None:
    """Regrow a block's cells into their separation gaps as
    :func:`~napari_unet.core.predict.postprocess.regrow_into_gaps` does on the whole image: the
    merged labels are read with the regrowth's reach around the block (clipped at the image
    border, as the whole image is), the block written into ``labels``."""
    import zarr

    group = zarr.open_group(spec.output, mode="r+")
    starts = spatial_key(spec, key)
    stops = [min(a + b, n) for a, b, n in zip(starts, spec.block, shape, strict=True)]
    reach = regrow_reach(distance, spacing, len(starts))
    lo = [max(a - r, 0) for a, r in zip(starts, reach, strict=True)]
    hi = [min(b + r, n) for b, r, n in zip(stops, reach, shape, strict=True)]
    where = (key[0],) if spec.stacked and not spec.volume else ()
    around = np.asarray(group[MERGED][(*where, *(slice(a, b) for a, b in zip(lo, hi,
                                                                            strict=True)))])
    grown = regrow_into_gaps(around, distance, spacing=spacing)
    inner = tuple(slice(a - q, b - q) for a, b, q in zip(starts, stops, lo, strict=True))
    group["labels"][out_index(spec, key, stops)] = grown[inner]


def sample_range(view: PlaneView, norm: dict, max_pixels: int = 2**22):
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


def block_normalizer(spec: BlockSpec, plane: int, nsp: int):
    """The block transform: ``normalize``'s mapping of the plane, per channel."""
    if spec.ranges is None:
        return lambda b: np.asarray(b, dtype=np.float32)
    shape = (-1, *[1] * nsp)
    lo, hi, flip = (None if v is None else np.reshape(v, shape) for v in spec.ranges[plane])
    return lambda b: apply_range(b.astype(np.float32), lo, hi, flip)
