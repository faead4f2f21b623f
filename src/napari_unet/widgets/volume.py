"""Volumes in the widgets: which layers are 3D, the "annotated slices" layer, spacing from scale.

A 3D image layer is trained as a volume (the 3D U-Net of Çiçek et al. 2016) from a few annotated
slices: the user paints the cells of a plane, then marks the plane annotated (Annotate cells >
"Mark this slice annotated"). The marks live in a visible uint8 Labels layer
``"<image> annotated slices"`` (1 on every voxel of a marked plane), which the Train widget turns
into the ``annotated`` mask of the :class:`~napari_unet.core.training.TrainingPair`: voxels outside
the marked planes have weight 0. The user's own layers are never written.
"""

from __future__ import annotations

import numpy as np

from napari_unet.core.targets.sparse import count_slices
from napari_unet.widgets.annotation_layers import background_layer, image_labels_layer
from napari_unet.widgets.common import spatial_shape

#: Suffix of the Labels layer holding an image's annotated slices (1 = annotated).
SLICES_SUFFIX = " annotated slices"
#: names of the spatial axes of a volume, in array order
AXES = ("z", "y", "x")


def is_volume(layer) -> bool:
    """True for a layer with three spatial axes (a Z, Y, X stack; RGB axis not counted)."""
    return layer is not None and len(spatial_shape(layer)) == 3


def layer_spacing(layer) -> tuple[float, float, float]:
    """The voxel size (Z, Y, X) of a 3D layer: its ``scale``, as napari draws it."""
    return tuple(float(s) for s in np.asarray(layer.scale)[-3:])


def predict_spacing(layer) -> tuple[float, float, float] | None:
    """The spacing a 3D prediction of ``layer`` is post-processed with: its ``scale`` when set
    (not all 1), else None (then the spacing stored with the model is used)."""
    spacing = layer_spacing(layer)
    return None if all(s == 1.0 for s in spacing) else spacing


def slicing_axis(layer, viewer) -> tuple[int, int]:
    """(axis of ``layer`` sliced now, index of the shown plane along it).

    0 is a z plane (the viewer shows y, x), 1 a y plane (xz view), 2 an x plane (yz view).
    A ValueError when the viewer shows the volume in 3D (no single plane is shown).
    """
    if viewer.dims.ndisplay != 2:
        raise ValueError(
            "slice: the viewer shows the volume in 3D; switch to the 2D view (the square "
            "button at the bottom left) and go to the plane you annotated"
        )
    offset = viewer.dims.ndim - layer.ndim
    hidden = [a - offset for a in viewer.dims.not_displayed if a - offset >= 0]
    lead = layer.ndim - 3  # non-spatial leading axes (none for a plain volume)
    hidden = [a - lead for a in hidden if a >= lead]
    if len(hidden) != 1:
        raise ValueError(f"slice: expected one sliced axis of the volume, got {hidden}")
    axis = hidden[0]
    point = np.asarray(viewer.dims.point[-layer.ndim :], dtype=float)
    data_point = np.asarray(layer.world_to_data(point), dtype=float)[lead:]
    shape = spatial_shape(layer)
    return axis, int(np.clip(round(data_point[axis]), 0, shape[axis] - 1))


#: what Predict says for each way of segmenting (:func:`predict_mode`)
PREDICT_MODES = {
    "image": "2D model on a 2D image",
    "plane": "2D model on a stack: the shown plane only",
    "stack": "2D model on a stack: every plane, plane by plane",
    "volume": "3D model on a volume: one 3D prediction (a 3D Labels layer)",
}


def predict_mode(model, layer, *, whole_stack: bool) -> str:
    """How a model segments an image layer: "image" (2D), "plane" (the shown plane of a stack,
    2D model), "stack" (every plane, 2D model) or "volume" (3D model on a Z, Y, X image).

    Never a guess between them: a 3D model on a 2D image is a ValueError naming both.
    """
    if layer is None:
        raise ValueError("image: choose an image layer to segment")
    spatial = len(spatial_shape(layer))
    if getattr(model, "ndim", 2) == 3:
        if spatial != 3:
            raise ValueError(
                f"image: the model is a 3D U-Net, '{layer.name}' has {spatial} spatial axes; "
                "choose a (Z, Y, X) volume or a 2D model")
        return "volume"
    if spatial <= 2:
        return "image"
    return "stack" if whole_stack else "plane"


def scales_note(metadata: dict | None, layer) -> str:
    """What Predict adds to its mode line for a colour (RGB) layer whose model averages scales
    on colour images (:func:`napari_unet.core.predict.scales.stored_scales`); "" otherwise.

    >>> class Layer: rgb = True
    >>> scales_note({"postprocess": {"scales": {"colour": [1, 0.7]}}}, Layer())
    '; colour (R, G, B not all equal): scales 1, 0.7 averaged, as the model stores'
    """
    from napari_unet.core.predict.scales import stored_scales

    if not getattr(layer, "rgb", False):
        return ""
    scales = stored_scales(metadata, colour=True)
    if scales == (1.0,):
        return ""
    return (f"; colour (R, G, B not all equal): scales {', '.join(f'{s:g}' for s in scales)} "
            "averaged, as the model stores")


def find_slices_layer(viewer, image_layer):
    """The "<image> annotated slices" Labels layer of the image's shape (or the " (2)", …
    that :func:`slices_layer` made when a user layer held the name), or None."""
    return image_labels_layer(viewer, image_layer, SLICES_SUFFIX, create=False)


def slices_layer(viewer, image_layer):
    """Find or add the image's annotated-slices layer (a fresh name if a user layer has it)."""
    return image_labels_layer(
        viewer, image_layer, SLICES_SUFFIX, dtype=np.uint8, opacity=0.15,
        metadata={"napari_unet": "annotated slices"},
    )


def set_slice(layer, axis: int, index: int, value: bool) -> None:
    """Mark (``value`` True) or unmark the plane ``index`` along ``axis`` of a slices layer."""
    where = [slice(None)] * 3
    where[axis] = index
    data = layer.data
    data[tuple(where)] = 1 if value else 0
    layer.data = data  # the data event: the Train widget's rule line follows


def slices_mask(viewer, image_layer) -> np.ndarray | None:
    """Bool (Z, Y, X): the annotated slices of the image, or None when none is marked."""
    layer = find_slices_layer(viewer, image_layer)
    if layer is None:
        return None
    mask = np.asarray(layer.data) != 0
    return mask if mask.any() else None


def describe_slices(mask: np.ndarray | None) -> str:
    """The marked planes by view: "3 xy" / "3 xy + 1 xz" / "none".

    >>> m = np.zeros((4, 5, 6), bool); m[1] = True; m[:, 2] = True
    >>> describe_slices(m)
    '1 xy + 1 xz'
    """
    views = {"z": "xy", "y": "xz", "x": "yz"}
    parts = [f"{n} {views[a]}" for a, n in count_slices(mask).items() if n]
    return " + ".join(parts) or "none"


def describe_volume(labels: np.ndarray, annotated: np.ndarray | None) -> str:
    """The 3D rule line: "3D: N annotated slices, M cells, P voxels" (what counts in training).

    ``annotated`` None: the labels are a complete annotation (every voxel counts).

    >>> labels = np.zeros((4, 5, 6), int); labels[1, 1:3, 1:3] = 7; labels[3, 0, 0] = 2
    >>> m = np.zeros((4, 5, 6), bool); m[1] = True
    >>> describe_volume(labels, m)
    '3D: 1 annotated slice (1 xy), 1 cell, 30 voxels count (of 120; the rest has weight 0)'
    """
    from napari_unet.core.metrics import count_labels

    if annotated is None:
        cells = count_labels(labels)
        return (f"3D: complete volume, {cells} cell{'s' * (cells != 1)}, "
                f"{labels.size} voxels count")
    cells = count_labels(np.where(annotated, labels, 0))
    n = sum(count_slices(annotated).values())
    return (f"3D: {n} annotated slice{'s' * (n != 1)} ({describe_slices(annotated)}), "
            f"{cells} cell{'s' * (cells != 1)}, {int(np.count_nonzero(annotated))} voxels "
            f"count (of {annotated.size}; the rest has weight 0)")


def volume_pairs(viewer, layer_pairs, *, complete: bool) -> list:
    """3D TrainingPairs of (image layer, labels layer) pairs: whole volumes, counted on the
    annotated slices.

    The counted voxels are the slices marked in Annotate cells ("<image> annotated
    slices"), or everything with "labels are complete"; the cells painted elsewhere and
    the other voxels have weight 0 (the 3D U-Net paper's sparse annotation).
    """
    from napari_unet.core.training.data import TrainingPair

    out = []
    for image_layer, labels_layer in layer_pairs:
        if not is_volume(image_layer) or image_layer.rgb:
            raise ValueError(
                f"pairs: '{image_layer.name}' is not a gray (Z, Y, X) volume, but the first "
                "pair trains a 3D model; pair volumes only, or tick 'train a 2D model on "
                "the shown plane'")
        image, labels = np.asarray(image_layer.data), np.asarray(labels_layer.data)
        if labels.shape != image.shape:
            raise ValueError(
                f"labels: '{labels_layer.name}' has shape {labels.shape}, the volume "
                f"'{image_layer.name}' {image.shape}; choose its annotations (Annotate "
                "cells > Create makes a matching layer)")
        annotated = None if complete else slices_mask(viewer, image_layer)
        if annotated is None and not complete:
            raise ValueError(
                f"annotated slices: none marked on '{image_layer.name}'; paint every cell of "
                "a few planes and press Annotate cells > 'Mark this slice annotated' on "
                "each, or tick 'labels are complete'")
        if not np.any(labels if annotated is None else labels[annotated]):
            raise ValueError(
                f"labels: '{labels_layer.name}' has no cells on the annotated slices; "
                "paint the cells of the marked planes")
        background = background_layer(viewer, image_layer, create=False)
        if background is not None:
            background = np.asarray(background.data) != 0
            background = background if background.any() else None
        out.append(TrainingPair(image, labels, annotated=annotated, background=background,
                                ndim=3, spacing=layer_spacing(image_layer)))
    return out
