"""The Train widget's rule line: which pixels count in training for the chosen pairs (the
sparse-annotation rule, the cells and pixels that take part), kept up to date while the user
paints, changes the pairs or the plane, and nothing trains."""

from __future__ import annotations

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel

from napari_unet.widgets.common import error_message

#: ms between two checks whether the line needs recomputing
REFRESH_MS = 1000


class RuleLine(QLabel):
    """A label showing the form's ``data.annotation_summary()``; recomputed at most every
    second after an edit of any layer, the pairs or the plane, while ``busy()`` is False and it
    is shown."""

    def __init__(self, viewer, form, busy, parent=None):
        super().__init__("", parent)
        self.setWordWrap(True)
        self.form, self.busy = form, busy
        self._dirty = False
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self._refresh)
        self._timer.start()
        viewer.layers.events.inserted.connect(self._watch_layer)
        viewer.layers.events.removed.connect(self.mark)
        viewer.dims.events.current_step.connect(self.mark)
        for layer in viewer.layers:
            self._watch_layer(layer=layer)
        for box in (form.data.image_combo, form.data.labels_combo):
            box.currentIndexChanged.connect(self.mark)
        form.data.complete.toggled.connect(self.mark)
        form.data.planes.toggled.connect(self.mark)
        self.update_rule()

    def update_rule(self) -> str:
        """Show which pixels count in training (the rule, cells, pixels) for the chosen pairs."""
        try:
            depth = int(self.form.controls["depth"].value())
            text = self.form.data.annotation_summary(depth=depth)
        except (ValueError, TypeError, LookupError) as exc:
            text = f"annotation: {exc}"
        self.setText(text)
        return text

    def mark(self, *_) -> None:
        """Something changed: recompute at the next refresh."""
        self._dirty = True

    def _watch_layer(self, event=None, layer=None) -> None:
        layer = layer if layer is not None else getattr(event, "value", None)
        for name in ("data", "paint", "set_data"):
            if layer is not None and hasattr(layer.events, name):
                getattr(layer.events, name).connect(self.mark)
        self.mark()

    def _refresh(self) -> None:
        if self._dirty and not self.busy() and self.isVisible():
            self._dirty = False
            try:
                self.update_rule()
            except Exception as exc:  # from a timer: never raise into Qt
                self.setText(f"annotation: {error_message(exc)}")
