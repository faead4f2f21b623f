"""The live prediction layer of the Train widget: the visible region, and an in-place update.

Creating a napari layer costs the GUI thread hundreds of milliseconds (a new vispy node);
replacing a layer's ``data`` rebuilds the node too. So the layer is made once, when training
starts, and every later preview of the same region writes into its array and refreshes only
the texture (:func:`show_labels`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from napari_unet.widgets.common import current_plane, upsert_layer

PREVIEW_LAYER = "live prediction"
#: the largest side of a preview region (pixels)
MAX_SIDE = 512


def visible_region(image_layer, viewer):
    """``(((r0, r1), (c0, c1)), geometry)`` of the shown part of the image's plane (at most
    512 × 512), or None when less than 8 × 8 pixels are shown; ``geometry`` places the labels."""
    plane, _ = current_plane(image_layer, viewer)
    corners = np.asarray(image_layer.corner_pixels)[:, -2:]
    (r0, c0), (r1, c1) = corners[0], corners[1] + 1
    r0, c0 = max(int(r0), 0), max(int(c0), 0)
    r1 = min(int(r1), plane.shape[0], r0 + MAX_SIDE)
    c1 = min(int(c1), plane.shape[1], c0 + MAX_SIDE)
    if r1 - r0 < 8 or c1 - c0 < 8:
        return None
    scale = np.asarray(image_layer.scale[-2:])
    offset = np.asarray(image_layer.translate[-2:]) + np.array([r0, c0]) * scale
    return ((r0, r1), (c0, c1)), {"translate": offset, "scale": scale}


def display_dtype(labels: np.ndarray) -> np.ndarray:
    """``labels`` as uint16 where they fit (a preview never holds 65,535 cells): napari shows
    8- and 16-bit labels through the texture directly, while 32-bit ones are mapped to
    texture values on the GUI thread first (measured under Xvfb: 28 ms against 39 ms a
    refreshed frame of a 512 × 512 preview).

    Examples
    --------
    >>> display_dtype(np.array([[0, 7]], np.int32)).dtype
    dtype('uint16')
    >>> display_dtype(np.array([[0, 70000]], np.int32)).dtype
    dtype('int32')
    """
    if labels.size == 0 or (labels.min() >= 0 and labels.max() < 2**16):
        return labels.astype(np.uint16, copy=False)
    return labels


def show_labels(viewer, labels: np.ndarray, geometry: dict):
    """Show ``labels`` in the live prediction layer (as :func:`display_dtype`): written in
    place when the layer is ours and has the same shape and type, else (first time, another
    region) a new layer."""
    labels = display_dtype(labels)
    layer = viewer.layers[PREVIEW_LAYER] if PREVIEW_LAYER in viewer.layers else None
    if (layer is not None and layer.metadata.get("napari_unet") == PREVIEW_LAYER
            and layer.data.shape == labels.shape and layer.data.dtype == labels.dtype
            and np.allclose(layer.translate[-2:], geometry["translate"])):
        layer.data[...] = labels
        # the layer list passes the layer's set_data on as a change of the layer's row, and
        # its view repaints in a turn of its own (a second window composition, 15-20 ms in
        # software OpenGL) although nothing it shows changed (no thumbnail, name or
        # visibility): the canvas alone is redrawn
        with viewer.layers.events.blocker():
            layer.refresh(extent=False, thumbnail=False, highlight=False)
        return layer
    return upsert_layer(viewer, labels, PREVIEW_LAYER, "labels", opacity=0.4, **geometry)


def pair_index(run_dir: Path, image_name: str | None) -> int:
    """Index in the run's data of the image layer ``image_name`` (the live preview's image)."""
    names = [d.get("name") for d in json.loads((Path(run_dir) / "run.json").read_text())["data"]]
    hits = [i for i, name in enumerate(names) if name == image_name]
    return hits[-1] if hits else 0
