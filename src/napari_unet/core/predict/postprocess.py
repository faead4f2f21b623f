"""Instance labels from class probabilities: touching cells kept apart, small objects dropped.

Two-class models (background, cell) were trained with the paper's separation borders between
touching cells, so a threshold on the cell probability leaves a thin background line between them
and 4-connected components are the cells. Where a border was missed, ``watershed=True`` splits a
component along the valleys of its distance transform, seeded from its local maxima. With
``seeds`` (the confident-core level), cells start from their cores above that probability and
grow into the pixels above the threshold: two cells joined by a faint bridge stay apart, and a
blob the network is unsure of everywhere (no core of ``min_size`` pixels) is dropped. Three-class
models (background, interior, border) use the interior components as seeds that a watershed grows
into interior ∪ border. ``regrow`` then gives the separation gap back to the cells on either side
(each cell was taught to stop short of its neighbour), so cells touch again as they do in truth.
``tissue=True`` is for cells that fill the space (a model trained on the tissue target): a seeded
watershed gives every tissue pixel to a cell (:mod:`napari_unet.core.predict.tissue`); the
watershed split and the regrowth do not apply there.

All the options live in one :class:`PostprocessSettings`: the command line, the Predict widget
and the model metadata key ``"postprocess"`` are built from its fields.

Everything works on images ``(K, H, W)`` and volumes ``(K, Z, Y, X)`` alike (face-connected
components, i.e. 6-connected in 3D). ``spacing`` (the voxel size, e.g. ``(5, 1, 1)``) makes the
distances anisotropic: distance transforms are taken with ``sampling=spacing`` and the watershed
seed distance, the regrowth distance and their windows are in units of the finest axis (an xy
pixel), so they span fewer slices along a coarse z. ``min_size`` counts voxels in 3D.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "CROSS",
    "PostprocessSettings",
    "cell_components",
    "fill_label_holes",
    "labels_from_probabilities",
    "regrow_into_gaps",
    "regrow_reach",
    "relative_spacing",
    "remove_small_labels",
    "stored_tta",
]

#: 4-connectivity in 2D: cells separated by a one-pixel diagonal gap stay apart
CROSS = ndi.generate_binary_structure(2, 1)


def _option(default, help: str, *, low=None, high=None, step=None, short=None):
    meta = {"help": help, "low": low, "high": high, "step": step}
    return field(default=default, metadata=meta if short is None else {**meta, "short": short})


@dataclass(frozen=True)
class PostprocessSettings:
    """How probabilities become labels; the one source of the CLI options and the GUI's.

    ``metadata`` of each field holds its help text and bounds (``low``, ``high``, ``step``),
    used to build the command line's options and the Predict widget's controls.

    Examples
    --------
    >>> s = PostprocessSettings.from_metadata({"postprocess": {"threshold": 0.4}}, min_size=3)
    >>> s.threshold, s.min_size, s.watershed
    (0.4, 3, False)
    >>> PostprocessSettings.from_metadata({"target": "tissue"}).tissue
    True
    """

    threshold: float = _option(0.5, "cell probability threshold", low=0.0, high=1.0, step=0.05)
    seeds: float = _option(
        0.0, "confident-core level: a cell needs a core of at least min_size pixels above this "
        "probability and grows from it into the pixels above the threshold, so cells joined by "
        "a faint bridge stay apart and blobs without a confident core are dropped (0: off)",
        low=0.0, high=1.0, step=0.05)
    watershed: bool = _option(False, "split touching cells whose border was missed")
    min_size: int = _option(10, "smallest cell in pixels", low=0, high=10**6, step=1)
    regrow: int = _option(
        1, "pixels each cell grows back into the gap to a touching cell (0: off)",
        low=0, high=10, step=1,
    )
    min_distance: int = _option(5, "watershed seed distance, about a cell radius", low=1,
                                high=1000, step=1)
    fill_holes: bool = _option(True, "fill background holes inside each cell")
    argmax: bool = _option(False, "most probable class instead of the threshold")
    tissue: bool = _option(
        False, "cells fill the space: every tissue pixel goes to a cell grown from a confident "
        "interior (default: on for models trained on a tissue)",
        short="cells fill the space (a tissue)")

    def __post_init__(self) -> None:
        for name in ("threshold", "seeds"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name}: expected a probability in [0, 1], got "
                                 f"{getattr(self, name)!r}; use a value from 0 to 1")
        for name in ("min_size", "regrow"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name}: expected an integer ≥ 0, got "
                                 f"{getattr(self, name)!r}; use 0 or more")
        if int(self.min_distance) < 1:
            raise ValueError(f"min_distance: expected an integer ≥ 1, got "
                             f"{self.min_distance!r}; use 1 or more")

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None, **overrides) -> PostprocessSettings:
        """The settings stored with a model (``metadata["postprocess"]``), then ``overrides``
        (``None`` values do not override). Unknown stored keys are ignored; a model trained on
        a tissue (``metadata["target"]``) that stores no ``tissue`` gets ``tissue=True``."""
        stored = dict((metadata or {}).get("postprocess") or {})
        if "tissue" not in stored and (metadata or {}).get("target") == "tissue":
            stored["tissue"] = True
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in stored.items() if k in names}
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - names
        if unknown:
            raise TypeError(f"unknown post-processing option(s) {sorted(unknown)}; "
                            f"expected some of {sorted(names)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the model metadata's ``"postprocess"``)."""
        return asdict(self)

    def replace(self, **changes) -> PostprocessSettings:
        return replace(self, **changes)

    def labels(self, prob: np.ndarray, *, spacing=None) -> np.ndarray:
        """:func:`labels_from_probabilities` with these settings (``spacing``: voxel size)."""
        return labels_from_probabilities(prob, spacing=spacing, **self.to_dict())


def stored_tta(metadata: dict | None) -> bool:
    """Whether the model's metadata asks for test-time augmentation: ``"tta"`` in its
    ``"postprocess"``, which training sets for 2D models, whose post-processing it chooses on
    test-time augmentation (:func:`napari_unet.core.training.choice.choose_postprocess`);
    False for models that do not say.

    Examples
    --------
    >>> stored_tta({"postprocess": {"threshold": 0.6, "tta": True}})
    True
    >>> stored_tta({"postprocess": {"threshold": 0.6}}), stored_tta(None)
    (False, False)
    """
    return bool(((metadata or {}).get("postprocess") or {}).get("tta", False))


def relative_spacing(spacing, ndim: int) -> np.ndarray:
    """``spacing`` divided by its finest step (float64, one per axis); ones for None.

    Examples
    --------
    >>> relative_spacing((0.5, 0.1, 0.1), 3).tolist()
    [5.0, 1.0, 1.0]
    """
    if spacing is None:
        return np.ones(ndim)
    sp = np.asarray(spacing, dtype=np.float64).ravel()
    if sp.size != ndim or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(
            f"spacing: expected {ndim} positive voxel sizes (one per spatial axis), got {spacing!r}"
        )
    return sp / sp.min()


def _window(distance: float, rel: np.ndarray) -> tuple[int, ...]:
    """Box sides covering ``distance`` finest-axis pixels along every axis."""
    return tuple(2 * int(np.floor(distance / r + 1e-9)) + 1 for r in rel)


def regrow_reach(distance: int, spacing, ndim: int) -> tuple[int, ...]:
    """Per axis, how far (pixels) :func:`regrow_into_gaps` looks from a pixel: labels beyond
    it never change the pixel's regrowth (block-wise prediction reads this much around a block).

    >>> regrow_reach(1, (5.0, 1.0, 1.0), 3)
    (1, 3, 3)
    """
    return tuple(w // 2 + 1 for w in _window(2 * int(distance), relative_spacing(spacing, ndim)))


def fill_label_holes(labels: np.ndarray) -> np.ndarray:
    """Fill background holes inside each label (holes holding other labels are left alone).

    Examples
    --------
    >>> lab = np.zeros((5, 5), np.int32); lab[1:4, 1:4] = 1; lab[2, 2] = 0
    >>> int(fill_label_holes(lab)[2, 2])
    1
    """
    out = labels.copy()
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        view = out[sl]
        filled = ndi.binary_fill_holes(view == i)
        view[filled & (view == 0)] = i
    return out


def remove_small_labels(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop labels with fewer than ``min_size`` pixels and renumber the rest 1..N (int32).

    Examples
    --------
    >>> remove_small_labels(np.array([[1, 1, 0, 2]]), 2).tolist()
    [[1, 1, 0, 0]]
    """
    counts = np.bincount(labels.ravel())
    keep = counts >= max(1, int(min_size))
    keep[0] = False
    lut = np.zeros(len(counts), np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels]


def regrow_into_gaps(labels: np.ndarray, distance: int = 1, *, spacing=None) -> np.ndarray:
    """Give background pixels between two touching cells back to the nearest of them.

    A background pixel joins its nearest label when that label is at most ``distance`` pixels
    away and a *different* label lies within ``2 * distance`` pixels (a square window): gaps up
    to ``2 * distance`` pixels wide close, each cell growing by at most ``distance``. Any ndim;
    with ``spacing`` distances are physical, in units of the finest axis (a gap of one z slice
    of 5 xy pixels is wider than ``2 * distance`` for ``distance < 3``).
    Background elsewhere (around isolated cells, outside a cluster) stays background, so cells
    do not grow into true background. Returns a new int32 array.

    Examples
    --------
    >>> regrow_into_gaps(np.array([[1, 1, 0, 0, 2, 2], [1, 1, 0, 0, 0, 0]])).tolist()
    [[1, 1, 1, 2, 2, 2], [1, 1, 1, 0, 0, 0]]
    >>> regrow_into_gaps(np.array([[1, 0, 0, 0, 0, 2]])).tolist()  # a wide gap stays background
    [[1, 0, 0, 0, 0, 2]]
    """
    labels = np.asarray(labels)
    out = labels.astype(np.int32, copy=True)
    if distance < 1 or out.max() == 0:
        return out
    rel = relative_spacing(spacing, out.ndim)
    size = _window(2 * int(distance), rel)
    big = np.iinfo(np.int32).max
    hi = ndi.maximum_filter(out, size=size)
    lo = ndi.minimum_filter(np.where(out > 0, out, big), size=size)
    between = (out == 0) & (hi > 0) & (lo != big) & (lo != hi)
    if not between.any():
        return out
    dist, idx = ndi.distance_transform_edt(out == 0, sampling=rel, return_indices=True)
    gap = between & (dist <= distance + 1e-9)
    out[gap] = out[tuple(i[gap] for i in idx)]
    return out


def cell_components(prob: np.ndarray, *, threshold: float = 0.5, argmax: bool = False,
                    fill_holes: bool = True, seeds: float = 0.0, min_core: int = 1,
                    ) -> tuple[np.ndarray, np.ndarray, int]:
    """(int32 labels, bool cell mask, count) before splitting, regrowth and size filtering.

    2 classes: face-connected (4 in 2D, 6 in 3D) components of the cell class; 3 classes:
    interior components grown by a watershed into interior ∪ border. With ``seeds`` above the
    threshold, the cells are the confident cores instead (components of the cell (interior)
    probability above ``seeds``, at least ``min_core`` pixels each) grown by a watershed of the
    probability into the cell mask: two cores joined by a bridge between the threshold and
    ``seeds`` stay two cells, and a component without such a core is dropped. ``prob`` is
    (K, H, W) or (K, Z, Y, X). Without ``seeds`` this is what :mod:`napari_unet.core.predict.blockwise`
    computes per block (where a cell can continue into the next block).

    Examples
    --------
    >>> p1 = np.zeros((3, 5), np.float32); p1[:, :2] = 1; p1[:, 3:] = 1
    >>> cell_components(np.stack([1 - p1, p1]))[2]
    2
    >>> p1[1, 2] = 0.6  # a faint bridge: one component at 0.5, two cores above 0.8
    >>> cell_components(np.stack([1 - p1, p1]))[2], cell_components(np.stack([1 - p1, p1]), seeds=0.8)[2]
    (1, 2)
    """
    cls = np.argmax(prob, axis=0) if argmax else None
    cell = cls == 1 if argmax else prob[1] > threshold
    face = ndi.generate_binary_structure(cell.ndim, 1)
    seeded = seeds > threshold
    markers, n = ndi.label(prob[1] > seeds if seeded else cell, structure=face)
    if seeded and min_core > 1:
        markers = remove_small_labels(markers, min_core)
        n = int(markers.max())
    if prob.shape[0] == 2 and not seeded:
        labels = markers.astype(np.int32)
    else:
        from skimage.segmentation import watershed

        grow = cell
        if prob.shape[0] == 3:
            grow = cell | (cls != 0 if argmax else prob[0] < 1.0 - threshold)
        labels = watershed(-prob[1], markers, mask=grow, connectivity=1).astype(np.int32)
    if fill_holes:
        labels = fill_label_holes(labels)
    return labels, cell, int(n)


def _split_watershed(fg: np.ndarray, cc: np.ndarray, min_distance: int,
                     spacing=None) -> np.ndarray:
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    if not cc.any():  # nothing to split (peak_local_max's empty answer has the wrong shape)
        return cc.astype(np.int32)
    rel = relative_spacing(spacing, fg.ndim)
    dist = ndi.distance_transform_edt(fg, sampling=rel)
    dist = ndi.gaussian_filter(dist, 1.0 / rel)  # no plateaus: one peak per blob
    if np.all(rel == 1):
        peaks = peak_local_max(
            dist, min_distance=max(1, int(min_distance)), labels=cc, exclude_border=False
        )
    else:  # a seed-distance box scaled per axis (fewer slices along a coarse z)
        footprint = np.ones(_window(max(1, int(min_distance)), rel), bool)
        peaks = peak_local_max(dist, footprint=footprint, labels=cc, exclude_border=False)
    markers = np.zeros(fg.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    seeded = np.unique(cc[tuple(peaks.T)]) if len(peaks) else np.zeros(0, cc.dtype)
    missing = np.setdiff1d(np.arange(1, int(cc.max()) + 1), seeded)
    if len(missing):  # components without a peak keep one seed each
        pos = ndi.maximum_position(dist, cc, missing)
        for j, p in enumerate(pos):
            markers[p] = len(peaks) + 1 + j
    return watershed(-dist, markers, mask=fg, connectivity=1).astype(np.int32)


def labels_from_probabilities(prob: np.ndarray, *, spacing=None, **options) -> np.ndarray:
    """Instance labels (int32, 0 = background) from softmax probabilities.

    Parameters
    ----------
    prob : ndarray (num_classes, H, W) or (num_classes, Z, Y, X)
        2 classes (background, cell) or 3 (background, interior, border).
    spacing : sequence of float, optional
        Pixel (voxel) size per spatial axis, e.g. ``(5.0, 1.0, 1.0)``: anisotropic distances for
        the watershed split and the regrowth (see the module docstring). Default: isotropic.
    **options
        The fields of :class:`PostprocessSettings` (``threshold=0.5``, ``seeds=0``, ``watershed=False``,
        ``min_size=10``, ``regrow=1``, ``min_distance=5``, ``fill_holes=True``, ``argmax=False``,
        ``tissue=False``).

    Returns
    -------
    int32 ndarray (H, W) or (Z, Y, X), labels renumbered 1..N.

    Examples
    --------
    >>> p1 = np.zeros((9, 9), np.float32); p1[1:4, 1:8] = 1; p1[5:8, 1:8] = 1
    >>> labels = labels_from_probabilities(np.stack([1 - p1, p1]), min_size=1)
    >>> labels.dtype, int(labels.max()), int((labels[4] > 0).sum())  # the gap row is given back
    (dtype('int32'), 2, 7)
    >>> p3 = np.zeros((4, 6, 6), np.float32); p3[:, :, :2] = 1; p3[:, :, 3:] = 1
    >>> int(labels_from_probabilities(np.stack([1 - p3, p3]), min_size=1).max())
    2
    """
    s = PostprocessSettings(**options)
    prob = np.asarray(prob)
    if prob.ndim not in (3, 4) or prob.shape[0] not in (2, 3):
        raise ValueError(
            f"prob: expected (num_classes, H, W) or (num_classes, Z, Y, X) with 2 or 3 "
            f"classes, got shape {prob.shape}"
        )
    relative_spacing(spacing, prob.ndim - 1)  # a bad spacing fails before any work
    if s.tissue:
        from napari_unet.core.predict.tissue import tissue_labels

        labels = tissue_labels(prob, threshold=s.threshold, seeds=s.seeds,
                               min_size=s.min_size, argmax=s.argmax)
        labels = fill_label_holes(labels) if s.fill_holes else labels
        return remove_small_labels(labels, s.min_size)
    cores = {"seeds": s.seeds, "min_core": s.min_size}
    if prob.shape[0] == 2 and s.watershed:
        cc, _, _ = cell_components(prob, threshold=s.threshold, argmax=s.argmax,
                                   fill_holes=False, **cores)
        labels = _split_watershed(cc > 0, cc, s.min_distance, spacing)
        labels = fill_label_holes(labels) if s.fill_holes else labels
    else:
        labels = cell_components(prob, threshold=s.threshold, argmax=s.argmax,
                                 fill_holes=s.fill_holes, **cores)[0]
    labels = remove_small_labels(labels, s.min_size)
    return regrow_into_gaps(labels, s.regrow, spacing=spacing) if s.regrow else labels


