"""Sample data for napari's File > Open Sample menu."""

from __future__ import annotations

from typing import Any

LayerDataTuple = tuple[Any, dict, str]


def touching_cells() -> list[LayerDataTuple]:
    """A synthetic 256×256 image of touching cells with its exact instance labels.

    Examples
    --------
    >>> layers = touching_cells()
    >>> [layer_type for _, _, layer_type in layers]
    ['image', 'labels']
    """
    from napari_unet.core.synthetic import synthetic_cells

    image, labels = synthetic_cells((256, 256), seed=0)
    return [
        (image, {"name": "touching cells"}, "image"),
        (labels, {"name": "touching cells labels", "opacity": 0.5}, "labels"),
    ]
