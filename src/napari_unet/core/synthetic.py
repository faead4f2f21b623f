"""Synthetic images and volumes of touching cells with exact instance labels (tests, demo, samples).

The cells are a Voronoi partition of random seeds clipped to discs (balls in 3D) around them, so
neighbouring cells share borders, as densely packed nuclei do. The image shows each cell as a
bright textured blob with a slightly darker rim, a faint dark line where two cells touch, blur and
noise. Volumes may be anisotropic (``spacing``): the cells are round in physical units and the
grid samples them coarsely along z, as a confocal stack with a large z step does.

:func:`synthetic_tissue` makes cells that fill the space instead, as a cell-wall stain shows a
plant tissue or an epithelium: every pixel belongs to a cell, the walls between them are bright.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from napari_unet.core.checks import check_spacing

__all__ = ["synthetic_cells", "synthetic_cells_3d", "synthetic_tissue"]


def synthetic_cells(
    shape: tuple[int, ...] = (256, 256),
    *,
    n_cells: int | None = None,
    radius: float = 14.0,
    noise: float = 0.05,
    seed: int | None = 0,
    spacing: float | Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Make an image (2D) or a volume (3D) of touching cells and its instance labels.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of an image or ``(D, H, W)`` of a volume.
    n_cells : int, optional
        Number of cell seeds; by default about one cell per ``(2.2 * radius)**ndim`` of the
        field's physical size.
    radius : float
        Typical cell radius, in the units of ``spacing`` (pixels by default).
    noise : float
        Standard deviation of the additive Gaussian noise (image range is about 0..1).
    seed : int or None
        Seed of the random generator (None: a fresh one). The same seed gives the same data.
    spacing : float or sequence of float, optional
        Pixel (voxel) size per axis, e.g. ``(4.0, 1.0, 1.0)`` for a z step four times the xy
        pixel; the cells are balls in these units. Default: 1 along every axis.

    Returns
    -------
    image : float32 ndarray, shape ``shape``
    labels : int32 ndarray, shape ``shape``, 0 = background, 1..N = cells (each one connected)

    Examples
    --------
    >>> image, labels = synthetic_cells((64, 64), radius=8, seed=1)
    >>> image.dtype, labels.dtype, image.shape
    (dtype('float32'), dtype('int32'), (64, 64))
    >>> int(labels.max()) > 1
    True
    >>> volume, cells = synthetic_cells((12, 48, 48), radius=8, spacing=(3.0, 1.0, 1.0), seed=1)
    >>> volume.shape, int(cells.max()) > 1
    ((12, 48, 48), True)
    """
    shape = tuple(shape)
    ndim = len(shape)
    if ndim not in (2, 3) or not all(isinstance(s, int | np.integer) for s in shape) or (
        min(shape) < (8 if ndim == 2 else 4)
    ):
        raise ValueError(
            f"shape: expected (H, W) with both sides >= 8 or (D, H, W) with every side >= 4, "
            f"got {shape!r}"
        )
    if radius <= 1:
        raise ValueError(f"radius: expected a cell radius > 1 pixel, got {radius!r}")
    step = check_spacing(spacing, ndim)
    sampling = None if spacing is None else step
    rng = np.random.default_rng(seed)
    extent = [n * d for n, d in zip(shape, step, strict=True)]  # physical size per axis
    if n_cells is None:
        n_cells = max(2, round(float(np.prod(extent)) / (2.2 * radius) ** ndim))
    # Seeds spread by rejection sampling: not too close to each other.
    seeds = np.empty((0, ndim), dtype=np.float64)
    min_dist = 1.3 * radius
    for _ in range(50 * n_cells):
        if len(seeds) == n_cells:
            break
        p = [rng.uniform(0, e) for e in extent]
        if np.all(((seeds - p) ** 2).sum(axis=1) > min_dist**2):
            seeds = np.vstack([seeds, p])
    markers = np.zeros(shape, dtype=np.int32)
    idx = np.clip(np.round(seeds / step).astype(int), 0, np.asarray(shape) - 1)
    markers[tuple(idx.T)] = np.arange(1, len(seeds) + 1)
    # Voronoi partition: nearest seed for every pixel (in physical units).
    dist, nearest = ndi.distance_transform_edt(markers == 0, sampling=sampling,
                                               return_indices=True)
    voronoi = markers[tuple(nearest)]
    # Each cell is its Voronoi region clipped to a (slightly irregular) ball around its seed.
    radii = radius * rng.uniform(0.85, 1.2, size=len(seeds) + 1)
    labels = np.where(dist <= radii[voronoi], voronoi, 0).astype(np.int32)
    labels = _relabel(labels)

    # Image: per-cell brightness and texture, darker rim, dark line between touching cells.
    n = int(labels.max())
    brightness = np.concatenate([[0.1], rng.uniform(0.55, 1.0, size=n)])
    image = brightness[labels].astype(np.float64)
    inside = ndi.distance_transform_edt(labels > 0, sampling=sampling)
    image *= np.where(labels > 0, 0.75 + 0.25 * np.clip(inside / (0.5 * radius), 0, 1), 1.0)
    touching = _touching_border(labels)
    image[touching] *= 0.45
    blur = 1.0 if spacing is None else tuple(1.0 / d for d in step)
    texture = ndi.gaussian_filter(rng.normal(size=shape), 2.0 if spacing is None else
                                  tuple(2.0 / d for d in step))
    image += 0.08 * texture / (texture.std() + 1e-12) * (labels > 0)
    image = ndi.gaussian_filter(image, blur)
    image += rng.normal(scale=noise, size=shape)
    return image.astype(np.float32), labels


def synthetic_cells_3d(
    shape: tuple[int, int, int] = (32, 128, 128),
    *,
    spacing: float | Sequence[float] | None = None,
    **options,
) -> tuple[np.ndarray, np.ndarray]:
    """A volume ``(D, H, W)`` of touching cells: :func:`synthetic_cells` for three axes.

    Examples
    --------
    >>> volume, labels = synthetic_cells_3d((16, 40, 40), radius=7, seed=2)
    >>> volume.shape, labels.dtype
    ((16, 40, 40), dtype('int32'))
    """
    if len(tuple(shape)) != 3:
        raise ValueError(f"shape: expected (D, H, W), got {shape!r}")
    return synthetic_cells(tuple(shape), spacing=spacing, **options)


def synthetic_tissue(
    shape: tuple[int, ...] = (128, 128),
    *,
    cell_size: float = 16.0,
    outside: int = 0,
    noise: float = 0.05,
    seed: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """An image (2D) or volume (3D) of cells that fill the space, and its instance labels.

    The cells are the Voronoi partition of a grid of seeds ``cell_size`` apart, each moved at
    random by up to 0.3 ``cell_size``: every pixel belongs to the cell of its nearest seed. The
    image is a cell-wall stain: the walls (the cell pixels with another cell among their 8 or
    26 neighbours) bright, the interiors dim, blurred, with Gaussian noise.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` or ``(D, H, W)``.
    cell_size : float
        Distance between neighbouring seeds, about a cell's diameter (pixels).
    outside : int
        Columns at the start of the last axis that are outside the tissue: background (label
        0, dark).
    noise : float
        Standard deviation of the additive Gaussian noise (image range is about 0..1).
    seed : int or None
        Seed of the random generator.

    Returns
    -------
    image : float32 ndarray, labels : int32 ndarray (1..N, 0 only ``outside``)

    Examples
    --------
    >>> image, labels = synthetic_tissue((48, 48), cell_size=12, seed=0)
    >>> image.dtype, int(labels.min()), int(labels.max()) >= 12
    (dtype('float32'), 1, True)
    """
    from napari_unet.core.targets.target import separation_borders

    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape: expected (H, W) or (D, H, W), got {shape!r}")
    if not cell_size >= 2:
        raise ValueError(f"cell_size: expected a distance of at least 2 pixels, got {cell_size!r}")
    rng = np.random.default_rng(seed)
    grids = [np.arange(cell_size / 2, n, cell_size) for n in shape]
    points = np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(-1, len(shape))
    points += rng.uniform(-0.3 * cell_size, 0.3 * cell_size, points.shape)
    points = np.clip(np.round(points), 0, np.array(shape) - 1).astype(int)
    markers = np.zeros(shape, np.int32)
    markers[tuple(points.T)] = np.arange(1, len(points) + 1, dtype=np.int32)
    nearest = ndi.distance_transform_edt(markers == 0, return_distances=False,
                                         return_indices=True)
    labels = markers[tuple(nearest)]
    labels[..., :outside] = 0
    labels = np.unique(labels, return_inverse=True)[1].reshape(shape).astype(np.int32)
    if outside <= 0:
        labels += 1  # no background: the first cell is 1, not 0
    walls = separation_borders(labels)
    image = 0.25 * (labels > 0) + 0.75 * walls
    image = ndi.gaussian_filter(image.astype(np.float64), 0.7)
    image += rng.normal(scale=noise, size=shape)
    return image.astype(np.float32), labels


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Keep one connected piece per id (the largest) and number the ids 1..N."""
    out = np.zeros_like(labels)
    next_id = 1
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        comp, n = ndi.label(labels[sl] == i)
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        keep = comp == (int(np.argmax(sizes)) + 1)
        if keep.sum() < 10:
            continue
        out[sl][keep] = next_id
        next_id += 1
    return out


def _touching_border(labels: np.ndarray) -> np.ndarray:
    """Pixels of a cell with a different cell in their 8- (2D) or 26-neighbourhood (3D)."""
    fp = np.ones((3,) * labels.ndim, bool)
    big = np.where(labels > 0, labels, np.iinfo(np.int32).max)
    lo = ndi.minimum_filter(big, footprint=fp, mode="nearest")
    hi = ndi.maximum_filter(labels, footprint=fp, mode="nearest")
    return (labels > 0) & ((lo != labels) & (lo != np.iinfo(np.int32).max) | (hi != labels))
