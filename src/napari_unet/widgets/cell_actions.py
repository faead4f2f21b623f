"""One-click cell actions of the Predict widget: accept, reject, merge, split, redraw a cell.

They write the annotation layer ``<image> annotations`` (the one *Annotate cells* paints) and
the background layer ``<image> background`` (its *Background brush*), never the prediction:
the core's :mod:`napari_unet.core.review.edits` computes each edit and it lands as one undoable
change (``Labels.data_setitem``: Ctrl+Z undoes it). By the sparse rule only what is accepted,
corrected, painted or marked background counts in training, so correcting 5 cells of 200 and
pressing *Continue training* is a valid round.

An armed action (a checked button) acts on every left click in the viewer: accept and reject
at once, merge and split after a second click (the second cell, or the second seed).
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QGridLayout, QLabel, QPushButton, QWidget

from napari_unet.widgets.annotation_layers import background_layer, labels_for
from napari_unet.widgets.common import guarded, show_error, show_info

#: the actions armed by a click: (name, button text, tooltip)
ACTIONS = (
    ("accept", "Accept", "Click a predicted cell: it is copied into the annotation and counts "
                         "in training as painted"),
    ("reject", "Reject", "Click a cell that is no cell: its pixels become explicit background"),
    ("merge", "Merge", "Click two cells that are one: they become one annotated cell"),
    ("split", "Split", "Click twice inside a cell that is two: a watershed on the probability "
                       "from the two clicks cuts it into two annotated cells"),
)


class CellActions(QWidget):
    """Accept / Reject / Merge / Split (armed by their buttons, applied by clicks), Redraw
    (napari's brush on the annotation) and *Accept the cells looked at*."""

    def __init__(self, viewer, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.buttons: dict[str, QPushButton] = {}
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        for k, (name, text, tip) in enumerate(ACTIONS):
            button = QPushButton(text)
            button.setCheckable(True)
            button.setToolTip(tip)
            button.toggled.connect(lambda on, name=name: self._on_toggle(name, on))
            self.buttons[name] = button
            grid.addWidget(button, 0, k)
        self.redraw_button = QPushButton("Redraw")
        self.redraw_button.setToolTip("Paint a cell anew with napari's brush on the annotation "
                                      "layer (a new id); the eraser removes pixels")
        self.accept_seen_button = QPushButton("Accept the cells looked at")
        self.accept_seen_button.setToolTip(
            "Every cell of the list you went to and left as predicted is accepted")
        grid.addWidget(self.redraw_button, 1, 0, 1, 2)
        grid.addWidget(self.accept_seen_button, 1, 2, 1, 2)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        grid.addWidget(self.status, 2, 0, 1, 4)
        self.prediction = self.image = self.prob = None
        self.index: tuple[int, ...] = ()
        #: predicted cell ids the user went to (the Check these next list fills it)
        self.looked: set[int] = set()
        self.mode: str | None = None
        self._clicks: list[tuple[int, ...]] = []
        self.redraw_button.clicked.connect(self._on_redraw)
        self.accept_seen_button.clicked.connect(self._on_accept_seen)
        viewer.mouse_drag_callbacks.append(self._on_mouse)

    # ------------------------------------------------------------------ state
    def set_prediction(self, layer, image, *, index=(), prob=None) -> None:
        """The prediction to act from: its labels layer, the image layer, the plane ``index``
        of a stack it was predicted on, its foreground probability (for Split)."""
        self.prediction, self.image, self.index, self.prob = layer, image, tuple(index), prob
        self.looked = set()
        self._clicks = []

    def set_mode(self, mode: str | None) -> None:
        """Arm an action (``accept``, ``reject``, ``merge``, ``split``) or none."""
        for name, button in self.buttons.items():
            button.setChecked(name == mode)
        self.mode, self._clicks = mode, []

    def _on_toggle(self, name: str, on: bool) -> None:
        if on:
            for other, button in self.buttons.items():
                if other != name:
                    button.setChecked(False)
            self.mode, self._clicks = name, []
            if self.prediction is not None and self.prediction in self.viewer.layers:
                self.viewer.layers.selection.active = self.prediction
                self.prediction.mode = "pan_zoom"  # a click acts; it never paints
            self.status.setText(dict((a[0], a[2]) for a in ACTIONS)[name])
        elif self.mode == name:
            self.mode, self._clicks = None, []

    def annotation_layer(self):
        """The image's annotation layer (added empty when there is none)."""
        return labels_for(self.viewer, self._image())

    def background_layer(self, *, create: bool = True):
        """The image's explicit background layer (added empty when there is none, or None
        without ``create``)."""
        return background_layer(self.viewer, self._image(), create=create)

    def _image(self):
        if self.prediction is None or self.image is None or self.image not in self.viewer.layers:
            raise ValueError("cell actions: no prediction yet; press Predict first")
        return self.image

    # ------------------------------------------------------------------ actions
    def pixel(self, position) -> tuple[int, ...]:
        """The prediction's pixel under a world ``position``."""
        return tuple(round(float(v)) for v in self.prediction.world_to_data(position))

    def click(self, position) -> list[int]:
        """What a left click at the world ``position`` does with the armed action; returns
        the new annotated cell ids (empty until a merge or split has its second click)."""
        if self.mode is None:
            return []
        self._clicks.append(self.pixel(position))
        if self.mode in ("merge", "split") and len(self._clicks) < 2:
            self.status.setText(f"{self.mode}: now click the second "
                                f"{'cell' if self.mode == 'merge' else 'part'}")
            return []
        clicks, self._clicks = self._clicks, []
        return self.apply(self.mode, clicks)

    def apply(self, action: str, pixels) -> list[int]:
        """Apply ``action`` at the prediction's ``pixels`` (one, or two for merge and split)."""
        from napari_unet.core.review import edits

        annotation = self.annotation_layer()
        background = self.background_layer(create=action == "reject")
        ann, bg = self._plane(annotation), self._plane(background)
        pred = np.asarray(self.prediction.data)
        masks = [edits.cell_mask(ann, pred, p)[0] for p in pixels]
        if action == "accept":
            new_ann, new_bg, ids = edits.accept(ann, bg, masks[0])
        elif action == "reject":
            new_ann, new_bg, ids = edits.reject(ann, bg, masks[0])
        elif action == "merge":
            new_ann, new_bg, ids = edits.merge(ann, bg, masks[0], masks[1])
        elif action == "split":
            if not np.array_equal(masks[0], masks[1]):
                raise ValueError("split: the two clicks are in different cells; click twice "
                                 "inside the cell to split")
            new_ann, new_bg, ids = edits.split(ann, bg, masks[0], pixels, self.prob)
        else:
            raise ValueError(f"action: expected one of accept, reject, merge, split; got "
                             f"{action!r}")
        self._write(annotation, ann, new_ann)
        self._write(background, bg, new_bg)
        self.status.setText(f"{action}: annotation '{annotation.name}' now holds "
                            f"{len(np.unique(new_ann)) - 1} cells")
        return ids

    def accept_looked_at(self) -> list[int]:
        """Accept every predicted cell of :attr:`looked` that is neither annotated nor
        background yet; returns the new ids."""
        from napari_unet.core.review import edits

        if not self.looked:
            raise ValueError("Accept the cells looked at: none yet; go through the list "
                             "(Next) first")
        annotation, background = self.annotation_layer(), self.background_layer(create=False)
        ann, bg = self._plane(annotation), self._plane(background)
        pred = np.asarray(self.prediction.data)
        new_ann, new_bg, ids = ann, bg, []
        for label in sorted(self.looked):
            mask = pred == label
            marked = new_bg is not None and new_bg[mask].any()
            if mask.any() and not (new_ann[mask].any() or marked):
                new_ann, new_bg, new = edits.accept(new_ann, new_bg, mask)
                ids += new
        self._write(annotation, ann, new_ann)
        self._write(background, bg, new_bg)
        show_info(f"{len(ids)} cells accepted into '{annotation.name}'")
        return ids

    def redraw(self):
        """The annotation layer in paint mode with a new cell id; returns the layer."""
        layer = self.annotation_layer()
        layer.selected_label = int(np.asarray(layer.data).max()) + 1
        layer.mode = "paint"
        self.set_mode(None)
        self.viewer.layers.selection.active = layer
        return layer

    # ------------------------------------------------------------------ layers
    def _plane(self, layer) -> np.ndarray | None:
        """The layer's data at the predicted plane (a copy); None for no layer."""
        if layer is None:
            return None
        data = np.asarray(layer.data)
        if data.ndim > self.prediction.ndim:
            data = data[self.index]
        if data.shape != tuple(self.prediction.data.shape):
            raise ValueError(f"'{layer.name}': shape {data.shape} does not match the prediction "
                             f"{tuple(self.prediction.data.shape)}; rename or remove that layer")
        return np.array(data, copy=True)

    def _write(self, layer, old, new) -> None:
        """One undoable change of ``layer`` where ``new`` differs from ``old``."""
        if layer is None or new is None:
            return
        changed = np.nonzero(new != old)
        if not changed[0].size:
            return
        lead = np.asarray(layer.data).ndim - new.ndim
        index = tuple(np.full(changed[0].size, i) for i in self.index[:lead]) + changed
        layer.data_setitem(index, new[changed].astype(layer.data.dtype))

    # ------------------------------------------------------------------ slots
    def _on_mouse(self, viewer, event):
        if self.mode is None or getattr(event, "button", 1) != 1 or self.prediction is None:
            return
        try:
            self.click(event.position)
        except ValueError as exc:
            self._clicks = []
            show_error(str(exc))

    @guarded
    def _on_redraw(self, *_):
        self.redraw()

    @guarded
    def _on_accept_seen(self, *_):
        self.accept_looked_at()
