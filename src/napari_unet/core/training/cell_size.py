"""The size of the annotated cells, and the smallest object a 3D model keeps.

A 3D model predicts a volume whose unannotated planes it never saw labelled; what it is unsure
of there comes out as fragments of a few dozen voxels beside nuclei of thousands. The default
minimum size (10 voxels, :class:`~napari_unet.core.predict.postprocess.PostprocessSettings`)
was set for 2D cells of a few hundred pixels, and the end-of-run choice cannot raise it: it
scores the annotated planes, where a fragment between two planes never shows. So a 3D model
trained on objects stores a minimum size of :data:`MIN_SIZE_FRACTION` of the typical annotated
cell's volume, estimated from the cells' largest annotated cross-section
(:func:`typical_cell_voxels`), unless its chosen minimum size is larger.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["MIN_SIZE_FRACTION", "floor_min_size", "typical_cell_voxels"]

#: the smallest object a 3D model keeps, as a share of :func:`typical_cell_voxels`. Chosen on
#: the full labels of GoNuclear crop 1135 (4 sparse models trained 15 minutes on 3 of its
#: planes, scored on all its 54 nuclei; estimate 3,074 voxels): mean F1@0.5 0.728 with the
#: default 10 voxels, 0.735 / 0.747 / **0.752** / 0.720 / 0.693 at 0.02 / 0.05 / 0.1 / 0.2 /
#: 0.3 of the estimate. Larger shares drop small true nuclei.
MIN_SIZE_FRACTION = 0.1


def typical_cell_voxels(labels: Sequence[np.ndarray], *, spacing: Sequence[float] | None = None
                        ) -> float | None:
    """The volume in voxels of a ball whose cross-section is a typical annotated cell's: each
    cell's largest area on one xy-plane (the first axis is z), the upper quartile of those
    areas taken as a disk of radius r, the ball 4/3 π r³ (physical units from ``spacing``, z,
    y, x) in voxels. The upper quartile, not the median: the labels of sparse planes give
    the areas of the planes the user annotated, and a plane that cuts a cell off its middle
    counts it smaller (GoNuclear crop 1135, 3 planes: 3,081 voxels from the upper quartile,
    864 from the median; its nuclei's median volume is 3,576). None without cells.

    Examples
    --------
    >>> z, y, x = np.mgrid[:21, :41, :41]
    >>> ball = ((z - 10) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 <= 100).astype(np.int32)
    >>> round(typical_cell_voxels([ball]) / int(ball.sum()), 2)  # the ball itself: ≈ 1
    1.02
    >>> sparse = np.zeros_like(ball); sparse[10] = ball[10]  # its middle plane only
    >>> round(typical_cell_voxels([sparse]) / int(ball.sum()), 2)
    1.02
    """
    sz, sy, sx = (1.0, 1.0, 1.0) if spacing is None else (float(s) for s in spacing)
    areas: list[int] = []  # each cell's largest cross-section, volume after volume
    for volume in labels:
        volume = np.asarray(volume)
        if volume.ndim != 3:
            raise ValueError(f"labels: expected (Z, Y, X) volumes, got shape {volume.shape}")
        largest: dict[int, int] = {}
        for plane in volume:
            ids, counts = np.unique(plane[plane > 0], return_counts=True)
            for i, n in zip(ids.tolist(), counts.tolist(), strict=True):
                largest[i] = max(largest.get(i, 0), n)
        areas.extend(largest.values())
    if not areas:
        return None
    area = float(np.quantile(areas, 0.75)) * sy * sx
    radius = math.sqrt(area / math.pi)
    return 4.0 / 3.0 * math.pi * radius**3 / (sz * sy * sx)


def floor_min_size(postprocess: dict | None, labels: Sequence[np.ndarray], *,
                   spacing: Sequence[float] | None = None) -> dict | None:
    """A 3D model's stored post-processing with its minimum size raised to
    :data:`MIN_SIZE_FRACTION` of :func:`typical_cell_voxels` of its
    annotated ``labels`` where that is larger (the chosen or the
    default one stays otherwise); ``"cell_voxels"`` records the estimate. Unchanged without
    cells.

    Examples
    --------
    >>> z, y, x = np.mgrid[:21, :41, :41]
    >>> ball = ((z - 10) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 <= 100).astype(np.int32)
    >>> floor_min_size({"threshold": 0.6, "min_size": 10}, [ball])["min_size"]
    425
    >>> floor_min_size({"min_size": 1000}, [ball])["min_size"]
    1000
    """
    from napari_unet.core.predict.postprocess import PostprocessSettings

    voxels = typical_cell_voxels(labels, spacing=spacing)
    if voxels is None:
        return postprocess
    stored = dict(postprocess or {})
    current = int(stored.get("min_size", PostprocessSettings().min_size))
    stored["min_size"] = max(current, round(MIN_SIZE_FRACTION * voxels))
    stored["cell_voxels"] = round(voxels)
    return stored
