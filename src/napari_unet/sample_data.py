"""Sample data for napari's File > Open Sample menu."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LayerDataTuple = tuple[Any, dict, str]

DATA_DIR = Path(__file__).with_name("data")


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


def load_nuclei() -> tuple:
    """The shipped real nuclei image (uint8, 256×256) and its uint16 instance labels.

    A fluorescence image of densely packed, often touching nuclei from the DSB2018 / BBBC038
    set (CC0, Caicedo et al. 2019, Nature Methods 16:1247); see ``data/ATTRIBUTION.md``.

    Examples
    --------
    >>> image, labels = load_nuclei()
    >>> image.shape, image.dtype.name, labels.dtype.name, int(labels.max()) > 50
    ((256, 256), 'uint8', 'uint16', True)
    """
    import imageio.v3 as iio
    import tifffile

    image = iio.imread(DATA_DIR / "dsb2018_nuclei.png")
    labels = tifffile.imread(DATA_DIR / "dsb2018_nuclei_labels.tif")
    return image, labels


def nuclei() -> list[LayerDataTuple]:
    """A real fluorescence image of touching nuclei (DSB2018, CC0) with its instance labels.

    Examples
    --------
    >>> [(meta["name"], kind) for _, meta, kind in nuclei()]
    [('nuclei (DSB2018)', 'image'), ('nuclei (DSB2018) labels', 'labels')]
    """
    image, labels = load_nuclei()
    credit = "DSB2018 / BBBC038, CC0; Caicedo et al. 2019, Nature Methods 16:1247"
    return [
        (image, {"name": "nuclei (DSB2018)", "metadata": {"source": credit}}, "image"),
        (labels, {"name": "nuclei (DSB2018) labels", "opacity": 0.5}, "labels"),
    ]
