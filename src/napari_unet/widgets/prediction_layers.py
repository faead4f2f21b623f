"""The layers the Predict widget writes besides the labels: the user's edits protected, the copy
that becomes an annotation, the comparison with annotated cells."""

from __future__ import annotations

import numpy as np

from napari_unet.widgets.common import show_info, upsert_layer

__all__ = ["COMPARE_COLORS", "COMPARISON", "EDITED", "EditTracker", "copy_as_annotation",
           "show_comparison", "truth_plane", "unedited_name"]

#: layer metadata key set when the user edits a layer the widget wrote (it is then never rewritten)
EDITED = "napari_unet_edited"
COMPARE_COLORS = {0: "transparent", 1: "#30c030", 2: "#ff3030", 3: "#3080ff", None: "transparent"}
COMPARISON = "comparison (matched/missed/extra)"


def unedited_name(viewer, base: str) -> str:
    """``base``, or ``base (2)``, … : the first name whose layer the user has not edited."""
    name, n = base, 1
    while name in viewer.layers and viewer.layers[name].metadata.get(EDITED):
        n += 1
        name = f"{base} ({n})"
    return name


class EditTracker:
    """Marks a tracked layer :data:`EDITED` when its data change, except while ``writing``
    (the widget's own updates)."""

    def __init__(self) -> None:
        self.writing = False

    def track(self, layer) -> None:
        if getattr(layer, "_napari_unet_tracked", False):
            return
        layer._napari_unet_tracked = True
        layer.events.paint.connect(self._on_edit)
        layer.events.data.connect(self._on_edit)

    def _on_edit(self, event) -> None:
        if not self.writing:
            event.source.metadata[EDITED] = True


def copy_as_annotation(viewer, pred, image: str):
    """A new labels layer ``<image> annotation`` (numbered if taken) holding a copy of ``pred``:
    neither the prediction nor an existing annotation is ever overwritten."""
    base = name = f"{image} annotation"
    n = 1
    while name in viewer.layers:
        n += 1
        name = f"{base} ({n})"
    layer = viewer.add_labels(
        np.array(pred.data, copy=True), name=name, scale=pred.scale, translate=pred.translate,
        metadata={"napari_unet_annotation_of": image},
    )
    show_info(f"'{name}': correct it with the labels tools, then Train U-Net > Continue training")
    return layer


def truth_plane(truth_layer, shape, index=()):
    """The annotated cells of ``truth_layer`` at the predicted plane(s), or None without one."""
    if truth_layer is None:
        return None
    truth = np.asarray(truth_layer.data)
    if index and truth.ndim > len(shape):
        truth = truth[index]
    if truth.shape != tuple(shape):
        raise ValueError(
            f"compare with: '{truth_layer.name}' has shape {truth.shape}, the prediction "
            f"{tuple(shape)}; choose the annotations of the predicted image or '(none)'"
        )
    return truth


def show_comparison(viewer, comparison, scores, geometry) -> str:
    """Show the comparison layer (matched green, missed red, extra blue); its line of scores."""
    if comparison is None:
        return ""
    upsert_layer(viewer, comparison, COMPARISON, "labels", colormap=COMPARE_COLORS,
                 opacity=0.7, **geometry)
    return (f"IoU {scores['iou']:.3f} · F1@0.5 {scores['f1']:.3f} — matched {scores['tp']} "
            f"(green), missed {scores['fn']} (red), extra {scores['fp']} (blue)")
