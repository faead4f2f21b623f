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

__all__ = ["background_layer", "labels_for", "read_labels", "regions_layer", "write_labels"]

NO_IMAGE = "image: open or choose an image layer first (File > Open Sample works)"


def labels_for(viewer, image, chosen=None):
    """The labels layer to paint the cells of ``image`` on: ``chosen`` when its shape is the
    image's (ValueError otherwise), else the layer "<image> annotations" of that shape, else a
    new empty one (uint16, the image's scale and translation)."""
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
    name = image.name + ANNOTATIONS_SUFFIX
    if name in viewer.layers and tuple(viewer.layers[name].data.shape) == shape:
        return viewer.layers[name]  # attach, never overwrite
    return viewer.add_labels(
        np.zeros(shape, dtype=np.uint16 if max(shape) < 2**31 else np.int32), name=name,
        scale=image.scale[-len(shape) :], translate=image.translate[-len(shape) :],
    )


def background_layer(viewer, image):
    """The Labels layer "<image> background" of the image's shape (reused when it exists; a
    layer of that name that is not one gets a fresh name, " (2)", never overwritten)."""
    if image is None:
        raise ValueError(NO_IMAGE)
    shape = spatial_shape(image)
    name = base = image.name + BACKGROUND_SUFFIX
    n = 1
    while name in viewer.layers:
        found = viewer.layers[name]
        if found._type_string == "labels" and tuple(found.data.shape) == shape:
            return found
        n += 1
        name = f"{base} ({n})"
    return viewer.add_labels(
        np.zeros(shape, dtype=np.uint8), name=name, opacity=0.5,
        scale=image.scale[-len(shape) :], translate=image.translate[-len(shape) :],
    )


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
