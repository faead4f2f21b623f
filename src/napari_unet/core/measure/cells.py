"""One row per cell of a label image: size, position, shape, intensity, confidence.

Every property comes from :func:`skimage.measure.regionprops_table` (with ``spacing``, so
sizes and positions are physical) and its ``extra_properties`` (integrated intensity, 3D
sphericity); only the column names, the units and the border flag are ours. Per-pixel maps
(the model's foreground probability, the spread of the test-time flips, or any other map a
caller adds) become one column each: their mean inside the cell, read in the same pass.

Columns, in order (``_c`` suffixes only for images with several channels):

=====================  =====================================================================
``label``              the cell's id in the label image
``plane``              stacks measured plane by plane (``planes=True``) only: the plane index
``area`` / ``volume``  pixel (voxel) count × pixel area (volume), in unit² (unit³)
``centroid_[z]yx``     centre of mass, in world coordinates: ``origin`` + index × spacing
``bbox_[z]yx0/1``      bounding box, pixel indices (start inclusive, stop exclusive)
``equivalent_diameter``  diameter of the disc (ball) of the same area (volume), in unit
``eccentricity``       2D: of the ellipse with the same second moments (0 = circle)
``solidity``           2D: area / convex hull area
``sphericity``         3D: π^(1/3) (6V)^(2/3) / A of the cell's surface (1 = ball), :func:`sphericity`
``mean_intensity``     of the image inside the cell; ``min_``, ``max_intensity`` likewise
``integrated_intensity``  sum of the image's pixel values inside the cell
``touches_border``     the cell reaches the image edge (in y/x for planes), so it may be cut
one per map          the map's mean inside the cell (e.g. ``mean_probability``)
``confidence``         with the ``mean_probability`` map: the model's confidence in the cell,
                       in [0, 1] (:mod:`~napari_unet.core.measure.confidence`)
=====================  =====================================================================

The units of every column are in ``table.attrs["units"]``; :func:`napari_unet.core.measure.
with_units` puts them into the column names, as the CSV files and the napari layer show them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.measure import marching_cubes, mesh_surface_area, regionprops_table

from napari_unet.core.measure.confidence import PROBABILITY, add_confidence

__all__ = ["confidence_maps", "measure_cells", "sphericity"]

_AXES = {2: "yx", 3: "zyx"}


def sphericity(mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """Sphericity π^(1/3) (6V)^(2/3) / A of a 3D mask (1: a ball, less for any other shape).

    V and A are those of the marching-cubes surface of the mask smoothed by a Gaussian of one
    voxel of the finest axis, so that the voxel staircase does not count as surface (unsmoothed,
    a digital ball of radius 10 scores 0.91 and a cube 0.85; smoothed, 1.00 and 0.92 for
    exactly 1 and 0.81): the shape is read at the scale of a voxel.

    Examples
    --------
    >>> z, y, x = np.ogrid[-12:13, -12:13, -12:13]
    >>> round(sphericity(z**2 + y**2 + x**2 <= 100), 2)
    1.0
    >>> round(sphericity(np.ones((2, 20, 20), bool)), 2)
    0.45
    """
    spacing = np.asarray(spacing, float)
    smooth = ndi.gaussian_filter(np.pad(np.asarray(mask, np.float32), 3),
                                 sigma=spacing.min() / spacing)
    if smooth.max() <= 0:
        return float("nan")
    # a cell of a few voxels smooths to less than 0.5 everywhere: its half-maximum surface
    level = 0.5 if smooth.max() > 0.5 else 0.5 * float(smooth.max())
    verts, faces, _normals, _values = marching_cubes(smooth, level, spacing=tuple(spacing))
    area = mesh_surface_area(verts, faces)
    a, b, c = (verts[faces[:, i]] for i in range(3))
    volume = abs(float(np.einsum("ij,ij->", a, np.cross(b, c)))) / 6.0  # divergence theorem
    return float(math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area) if area > 0 else 0.0


def confidence_maps(prob: np.ndarray, *, flip_std: np.ndarray | None = None,
                    stacked: bool = False) -> dict[str, np.ndarray]:
    """The model's confidence as per-pixel maps for :func:`measure_cells`' ``maps``.

    ``mean_probability``: the foreground probability, 1 − P(background) (for a three-class
    model the interior and the border together). ``mean_flip_std``, where test-time
    augmentation ran: the standard deviation of that probability over its passes
    (0 where they agree). ``prob`` is (K, *spatial), or (Z, K, Y, X) with ``stacked``.

    Examples
    --------
    >>> prob = np.array([[[0.25, 0.75]], [[0.75, 0.25]]], np.float32)
    >>> confidence_maps(prob)["mean_probability"].tolist()
    [[0.75, 0.25]]
    """
    background = prob[:, 0] if stacked else prob[0]
    maps = {PROBABILITY: (1.0 - background).astype(np.float32)}
    if flip_std is not None:
        maps["mean_flip_std"] = np.asarray(flip_std, np.float32)
    return maps


def _extra_properties(ndim: int, channels: int, spacing: tuple[float, ...]) -> list:
    """regionprops functions: the integrated intensity of the image's channels, 3D sphericity."""
    extra = []
    if channels:  # regionprops calls it once per channel (maps too; their sums are dropped)
        def integrated_intensity(regionmask, intensity):
            return float(np.sum(intensity[regionmask], dtype=np.float64))

        extra.append(integrated_intensity)
    if ndim == 3:
        def sphericity_(regionmask):
            return sphericity(regionmask, spacing)

        extra.append(sphericity_)
    return extra


def _units(ndim: int, unit: str) -> dict[str, str]:
    axes = _AXES[ndim]
    units = {"area": f"{unit}²", "volume": f"{unit}³", "equivalent_diameter": unit}
    units.update({f"centroid_{a}": unit for a in axes})
    units.update({f"bbox_{a}{s}": "px" for a in axes for s in "01"})
    return units


def _columns(raw: dict, ndim: int, channels: int, maps: Sequence[str]) -> dict:
    """regionprops_table's columns under our names, in our order."""
    axes = _AXES[ndim]
    out = {"label": raw["label"].astype(np.int64),
           "area" if ndim == 2 else "volume": raw["area"]}
    out.update({f"centroid_{a}": raw[f"centroid-{i}"] for i, a in enumerate(axes)})
    out.update({f"bbox_{a}0": raw[f"bbox-{i}"] for i, a in enumerate(axes)})
    out.update({f"bbox_{a}1": raw[f"bbox-{i + ndim}"] for i, a in enumerate(axes)})
    out["equivalent_diameter"] = raw["equivalent_diameter_area"]
    if ndim == 2:
        out["eccentricity"], out["solidity"] = raw["eccentricity"], raw["solidity"]
    else:
        out["sphericity"] = raw["sphericity_"]
    for ours, theirs in (("mean", "intensity_mean"), ("min", "intensity_min"),
                         ("max", "intensity_max"), ("integrated", "integrated_intensity")):
        for c in range(channels):
            suffix = f"_{c}" if channels > 1 else ""
            out[f"{ours}_intensity{suffix}"] = raw[f"{theirs}-{c}"]
    out["touches_border"] = np.zeros(len(out["label"]), bool)
    for j, name in enumerate(maps):
        out[name] = raw[f"intensity_mean-{channels + j}"]
    return out


def _measure_one(labels, intensity, channels, maps, spacing, origin) -> dict:
    ndim = labels.ndim
    props = ["label", "area", "centroid", "bbox", "equivalent_diameter_area"]
    props += ["eccentricity", "solidity"] if ndim == 2 else []
    props += ["intensity_mean"] if intensity is not None else []
    props += ["intensity_min", "intensity_max"] if channels else []
    raw = regionprops_table(labels, intensity, properties=props, spacing=spacing,
                            extra_properties=_extra_properties(ndim, channels, spacing))
    out = _columns(raw, ndim, channels, maps)
    border = np.zeros(len(out["label"]), bool)
    for a, n in zip(_AXES[ndim], labels.shape, strict=True):
        out[f"centroid_{a}"] = out[f"centroid_{a}"] + origin[_AXES[ndim].index(a)]
        if a != "z" or ndim == 3:
            border |= (out[f"bbox_{a}0"] == 0) | (out[f"bbox_{a}1"] == n)
    out["touches_border"] = border
    return out


def _intensity(labels, image, channel_axis, maps) -> tuple[np.ndarray | None, int]:
    """The image's channels and the maps as one float32 (..., C) array; C of the image."""
    layers, channels = [], 0
    if image is not None:
        image = np.asarray(image)
        if channel_axis is not None:
            image = np.moveaxis(image, channel_axis, -1)
        elif image.shape != labels.shape and image.shape[:-1] == labels.shape:
            pass  # channels last (RGB)
        else:
            image = image[..., None]
        if image.shape[:-1] != labels.shape:
            raise ValueError(
                f"image: expected the labels' shape {labels.shape} (with one channel axis "
                f"at channel_axis), got {np.shape(image)}; give the image the labels were "
                "predicted from")
        layers, channels = [image.astype(np.float32, copy=False)], image.shape[-1]
    for name, m in maps.items():
        if np.shape(m) != labels.shape:
            raise ValueError(f"maps[{name!r}]: expected the labels' shape {labels.shape}, "
                             f"got {np.shape(m)}")
        layers.append(np.asarray(m, np.float32)[..., None])
    return (np.concatenate(layers, axis=-1) if layers else None), channels


def measure_cells(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    *,
    maps: Mapping[str, np.ndarray] | None = None,
    spacing: Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
    unit: str = "px",
    channel_axis: int | None = None,
    planes: bool = False,
) -> pd.DataFrame:
    """The per-cell table of a label image (see the module's docstring for the columns).

    Parameters
    ----------
    labels : int ndarray, (Y, X) or (Z, Y, X)
        0 is background. With ``planes=True`` a (Z, Y, X) stack is measured plane by plane
        (2D columns and a ``plane`` column); otherwise (Z, Y, X) is one volume.
    image : ndarray, optional
        The raw image, of the labels' shape, with channels at ``channel_axis`` (or last, when
        the image has one axis more than the labels). None: no intensity columns.
    maps : mapping of str to ndarray, optional
        Per-pixel maps of the labels' shape; each gives the column of its name, its mean
        inside the cell (e.g. ``{"mean_probability": 1 - prob[0]}``).
    spacing, origin : sequence of float, optional
        Pixel size and world position of pixel 0 per axis of ``labels`` (default 1 and 0):
        areas, lengths and centroids are physical.
    unit : str
        The length unit of ``spacing`` (``"px"`` when there is none), written in
        ``table.attrs["units"]``.

    Returns
    -------
    pandas.DataFrame, one row per cell (ordered by plane, then label).

    Examples
    --------
    >>> labels = np.zeros((6, 8), np.int32); labels[1:3, 1:4] = 7
    >>> image = np.arange(48, dtype=np.uint16).reshape(6, 8)
    >>> t = measure_cells(labels, image, spacing=(0.5, 0.5), unit="µm")
    >>> int(t.loc[0, "label"]), t.loc[0, ["area", "mean_intensity", "integrated_intensity"]].tolist()
    (7, [1.5, 14.0, 84.0])
    >>> t.attrs["units"]["area"], bool(t.loc[0, "touches_border"])
    ('µm²', False)
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3) or not (np.issubdtype(labels.dtype, np.integer)
                                         or labels.dtype == bool):
        raise ValueError(f"labels: expected an integer (Y, X) or (Z, Y, X) array, got "
                         f"{labels.dtype} {labels.shape}")
    if planes and labels.ndim != 3:
        raise ValueError(f"planes: measures a (Z, Y, X) stack plane by plane, got labels of "
                         f"shape {labels.shape}; give planes=False for one image")
    spacing = tuple(float(s) for s in (spacing if spacing is not None else [1.0] * labels.ndim))
    origin = tuple(float(o) for o in (origin if origin is not None else [0.0] * labels.ndim))
    if len(spacing) != labels.ndim or len(origin) != labels.ndim:
        raise ValueError(f"spacing, origin: expected {labels.ndim} values (one per axis of the "
                         f"labels), got {spacing} and {origin}")
    maps = dict(maps or {})
    intensity, channels = _intensity(labels, image, channel_axis, maps)
    labels = labels.astype(np.int32, copy=False) if labels.dtype == bool else labels
    if not planes:
        table = pd.DataFrame(_measure_one(labels, intensity, channels, list(maps), spacing,
                                          origin))
    else:
        parts = []
        for z, plane in enumerate(labels):
            part = _measure_one(plane, None if intensity is None else intensity[z], channels,
                                list(maps), spacing[1:], origin[1:])
            parts.append(pd.DataFrame({"plane": np.full(len(part["label"]), z), **part}))
        table = pd.concat(parts, ignore_index=True)
        table.insert(0, "label", table.pop("label"))
    if PROBABILITY in maps:  # the model's confidence, from the same probabilities
        add_confidence(table)
    table.attrs["units"] = {k: v for k, v in _units(2 if planes else labels.ndim, unit).items()
                            if k in table.columns}
    return table
