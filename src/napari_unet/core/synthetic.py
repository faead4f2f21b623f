"""Synthetic images of touching cells with exact instance labels (tests, demo, sample data).

The cells are a Voronoi partition of random seeds clipped to discs around them, so neighbouring
cells share borders, as densely packed nuclei do. The image shows each cell as a bright textured
blob with a slightly darker rim, a faint dark line where two cells touch, blur and noise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["synthetic_cells"]


def synthetic_cells(
    shape: tuple[int, int] = (256, 256),
    *,
    n_cells: int | None = None,
    radius: float = 14.0,
    noise: float = 0.05,
    seed: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Make a 2D image of touching cells and its instance labels.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the image.
    n_cells : int, optional
        Number of cell seeds; by default about one cell per ``(2.2 * radius)**2`` pixels.
    radius : float
        Typical cell radius in pixels.
    noise : float
        Standard deviation of the additive Gaussian noise (image range is about 0..1).
    seed : int or None
        Seed of the random generator (None: a fresh one).

    Returns
    -------
    image : float32 ndarray, shape ``shape``
    labels : int32 ndarray, shape ``shape``, 0 = background, 1..N = cells

    Examples
    --------
    >>> image, labels = synthetic_cells((64, 64), radius=8, seed=1)
    >>> image.dtype, labels.dtype, image.shape
    (dtype('float32'), dtype('int32'), (64, 64))
    >>> int(labels.max()) > 1
    True
    """
    if len(shape) != 2 or min(shape) < 8:
        raise ValueError(f"shape: expected (H, W) with both sides >= 8, got {shape!r}")
    if radius <= 1:
        raise ValueError(f"radius: expected a cell radius > 1 pixel, got {radius!r}")
    rng = np.random.default_rng(seed)
    h, w = shape
    if n_cells is None:
        n_cells = max(2, round(h * w / (2.2 * radius) ** 2))
    # Seeds spread by a jittered grid-free rejection sampling: not too close to each other.
    seeds: list[tuple[float, float]] = []
    min_dist = 1.3 * radius
    for _ in range(50 * n_cells):
        if len(seeds) == n_cells:
            break
        p = (rng.uniform(0, h), rng.uniform(0, w))
        if all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 > min_dist**2 for q in seeds):
            seeds.append(p)
    pts = np.asarray(seeds, dtype=np.float64)
    markers = np.zeros(shape, dtype=np.int32)
    idx = np.clip(np.round(pts).astype(int), 0, [h - 1, w - 1])
    markers[idx[:, 0], idx[:, 1]] = np.arange(1, len(pts) + 1)
    # Voronoi partition: nearest seed for every pixel.
    dist, (iy, ix) = ndi.distance_transform_edt(markers == 0, return_indices=True)
    voronoi = markers[iy, ix]
    # Each cell is its Voronoi region clipped to a (slightly irregular) disc around its seed.
    radii = radius * rng.uniform(0.85, 1.2, size=len(pts) + 1)
    labels = np.where(dist <= radii[voronoi], voronoi, 0).astype(np.int32)
    labels = _relabel(labels)

    # Image: per-cell brightness and texture, darker rim, dark line between touching cells.
    n = int(labels.max())
    brightness = np.concatenate([[0.1], rng.uniform(0.55, 1.0, size=n)])
    image = brightness[labels].astype(np.float64)
    inside = ndi.distance_transform_edt(labels > 0)
    image *= np.where(labels > 0, 0.75 + 0.25 * np.clip(inside / (0.5 * radius), 0, 1), 1.0)
    touching = _touching_border(labels)
    image[touching] *= 0.45
    texture = ndi.gaussian_filter(rng.normal(size=shape), 2.0)
    image += 0.08 * texture / (texture.std() + 1e-12) * (labels > 0)
    image = ndi.gaussian_filter(image, 1.0)
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
    """Pixels of a cell with a different cell in their 8-neighbourhood."""
    fp = np.ones((3, 3), bool)
    big = np.where(labels > 0, labels, np.iinfo(np.int32).max)
    lo = ndi.minimum_filter(big, footprint=fp, mode="nearest")
    hi = ndi.maximum_filter(labels, footprint=fp, mode="nearest")
    return (labels > 0) & ((lo != labels) & (lo != np.iinfo(np.int32).max) | (hi != labels))
