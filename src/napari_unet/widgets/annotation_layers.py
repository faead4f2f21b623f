"""The layers an annotation is made of, for the "Annotate cells" widget: the labels layer of an
image (attached or made, never overwritten), the background strokes, the "annotated regions"
rectangles, and the labels written to and read from TIFF files.

Every function takes the viewer and returns the layer it made or chose; none replaces a layer
or a file the user made.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_unet.widgets.common import (
    ANNOTATIONS_SUFFIX,
    BACKGROUND_SUFFIX,
    REGIONS_LAYER,
    show_warning,
    spatial_shape,
)

__all__ = [
    "background_layer",
    "image_labels_layer",
    "labels_for",
    "read_labels",
    "regions_layer",
    "write_labels",
]

NO_IMAGE = "image: open or choose an image layer first (File > Open Sample works)"


def labels_for(viewer, image, chosen=None):
    """The labels layer to paint the cells of ``image`` on: ``chosen`` when its shape is the
    image's (ValueError otherwise), else the Labels layer "<image> annotations" of that shape,
    else a new empty one (uint16, the image's scale and translation): :func:`image_labels_layer`,
    the same layer that the Predict widget's cell actions write."""
    if image is None:
        raise ValueError(NO_IMAGE)
    shape = spatial_shape(image)
    if chosen is not None:
        if tuple(chosen.data.shape) != shape:
            raise ValueError(
                f"labels: the layer '{chosen.name}' has shape {tuple(chosen.data.shape)}, "
                f"the image {shape}; choose '(create new)' to make a matching one"
            )
        return chosen
    return image_labels_layer(viewer, image, ANNOTATIONS_SUFFIX)


def image_labels_layer(viewer, image, suffix: str, *, dtype=np.uint16, opacity: float = 0.7,
                       create: bool = True, metadata: dict | None = None):
    """The Labels layer ``<image><suffix>`` of the image's spatial shape: found, or added empty.

    The one find-or-create of the layers an image's annotation is made of (its cells, its
    background, its annotated slices). A layer that holds the name but is no Labels layer of
    that shape is never touched: the next free name ``<image><suffix> (2)``, ``(3)``, … is
    looked at (and used for a new layer), so a second call finds the layer the first made.

    Parameters
    ----------
    viewer : napari.Viewer
    image : napari.layers.Layer
        The image layer; the new layer takes its spatial shape, scale and translation.
    suffix : str
        Appended to the image's name, e.g. ``" annotations"``.
    dtype : numpy dtype, keyword-only
        Of a new layer's data (uint16: 65,535 cells).
    opacity : float, keyword-only
        Of a new layer (0.7, napari's default for labels).
    create : bool, keyword-only
        False: return None instead of adding a layer.
    metadata : dict, keyword-only
        Of a new layer.

    Returns
    -------
    napari.layers.Labels or None

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> class Viewer(dict):
    ...     layers = property(lambda self: self)
    ...     def add_labels(self, data, name, **kw):
    ...         self[name] = NS(data=data, _type_string="labels", name=name)
    ...         return self[name]
    >>> image = NS(name="cells", data=np.zeros((4, 5)), scale=(1, 1), translate=(0, 0))
    >>> viewer = Viewer({"cells annotations": NS(data=[], _type_string="points")})
    >>> image_labels_layer(viewer, image, " annotations").name
    'cells annotations (2)'
    >>> image_labels_layer(viewer, image, " annotations") is viewer["cells annotations (2)"]
    True
    """
    if image is None:
        raise ValueError(NO_IMAGE)
    shape = spatial_shape(image)
    name = base = image.name + suffix
    n = 1
    while name in viewer.layers:
        found = viewer.layers[name]
        if found._type_string == "labels" and tuple(found.data.shape) == shape:
            return found  # attach, never overwrite
        n += 1
        name = f"{base} ({n})"
    if not create:
        return None
    return viewer.add_labels(
        np.zeros(shape, dtype=dtype), name=name, opacity=opacity, metadata=metadata or {},
        scale=image.scale[-len(shape) :], translate=image.translate[-len(shape) :],
    )


def background_layer(viewer, image, *, create: bool = True):
    """The Labels layer "<image> background" of the image's shape (reused when it exists; a
    layer of that name that is not one gets a fresh name, " (2)", never overwritten); None
    when there is none and ``create`` is False."""
    return image_labels_layer(viewer, image, BACKGROUND_SUFFIX, dtype=np.uint8, opacity=0.5,
                              create=create)


def regions_layer(viewer, image):
    """The Shapes layer "annotated regions" (made with the image's dimensions on first use)."""
    if REGIONS_LAYER in viewer.layers:
        return viewer.layers[REGIONS_LAYER]
    ndim = len(spatial_shape(image)) if image is not None else 2
    return viewer.add_shapes(ndim=ndim, name=REGIONS_LAYER, face_color="transparent",
                             edge_color="yellow", edge_width=2)


def write_labels(layer, path, *, overwrite: bool = False) -> Path:
    """Write a labels layer as a zlib-compressed TIFF (``.tif`` added when the name has no TIFF
    suffix); an existing file is kept unless ``overwrite=True``. Returns the path written."""
    import tifffile

    if layer is None:
        raise ValueError("labels: no labels layer to save; create one and paint some cells")
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        path = path.with_suffix(".tif")
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"path: {path} exists and was kept; choose another name (the Save dialog asks "
            "before replacing a file)"
        )
    tifffile.imwrite(path, np.asarray(layer.data), compression="zlib")
    return path


def read_labels(viewer, path, image=None):
    """Read a labels TIFF into a NEW Labels layer named after the file (an existing layer is
    never overwritten); a shape other than ``image``'s is loaded with a warning."""
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no file at {path}; choose an existing .tif")
    data = tifffile.imread(path)
    if not np.issubdtype(data.dtype, np.integer):
        raise ValueError(
            f"path: {path.name} holds {data.dtype} values; annotations are integer ids "
            "(0 = background, one id per cell)"
        )
    if image is not None and tuple(data.shape) != spatial_shape(image):
        show_warning(
            f"{path.name} has shape {data.shape}, the image '{image.name}' "
            f"{spatial_shape(image)}: loaded anyway, pick the matching image"
        )
    name = path.stem
    while name in viewer.layers:
        name += " (loaded)"
    return viewer.add_labels(data, name=name)
