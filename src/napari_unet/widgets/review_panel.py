"""*Check these next*, part of the Predict widget: the least certain cells of the last
prediction and its likely misses, ranked, marked on the image and one click (or ``.`` / ``,``)
away; with the cell actions (:mod:`napari_unet.widgets.cell_actions`) that accept or fix them.

The ranking is the core's (:func:`napari_unet.core.review.review_table`, computed in the
prediction's worker from the cells' table's ``confidence``), the same as ``napari-unet predict
--confidence`` writes.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_unet.widgets.cell_actions import CellActions
from napari_unet.widgets.common import guarded, upsert_layer

#: the Points layer that marks the listed cells (rank as text)
MARKS = "check these next"
_COLOR, _CURRENT = "#ffa000", "#ff30ff"


def describe(row) -> str:
    """One line of the list: rank, what, confidence, reason."""
    what = f"cell {int(row['label'])}" if row["kind"] == "cell" else "missed cell?"
    plane = f" (plane {int(row['plane'])})" if int(row["plane"]) >= 0 else ""
    return f"{int(row['rank'])}. {what}{plane}: {float(row['confidence']):.2f}, {row['reason']}"


class ReviewPanel(QWidget):
    """The ranked list, its marks layer, Previous / Next, and the cell actions."""

    def __init__(self, viewer, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.count = QSpinBox()
        self.count.setRange(1, 500)
        self.count.setValue(20)
        self.count.setToolTip("How many of the least certain cells and likely misses to list")
        self.list = QListWidget()
        self.list.setToolTip("The cells the model is least sure of, and blobs of probability "
                             "without a cell, least certain first; click one to go there")
        self.previous_button, self.next_button = QPushButton("< Previous (,)"), QPushButton(
            "Next (.) >")
        self.actions = CellActions(viewer)
        self.summary = QLabel("Predict to see which cells to check first.")
        self.summary.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        head.addWidget(QLabel("Check these next"), 1)
        head.addWidget(self.count)
        layout.addLayout(head)
        layout.addWidget(self.summary)
        layout.addWidget(self.list)
        row = QHBoxLayout()
        row.addWidget(self.previous_button)
        row.addWidget(self.next_button)
        layout.addLayout(row)
        layout.addWidget(self.actions)
        self.review = None  # the ranked rows shown (a DataFrame)
        self.marks = None
        self.previous_button.clicked.connect(self._on_previous)
        self.next_button.clicked.connect(self._on_next)
        self.list.currentRowChanged.connect(self._on_row)
        self.count.valueChanged.connect(lambda *_: self._fill())
        viewer.bind_key(".", lambda _viewer: self._on_next(), overwrite=True)
        viewer.bind_key(",", lambda _viewer: self._on_previous(), overwrite=True)
        self._all = None

    def show_review(self, prediction, image, review, *, index=(), prob=None) -> None:
        """List ``review`` (:func:`~napari_unet.core.review.review_table`'s rows) for the
        ``prediction`` labels layer of ``image`` (``index``: the plane of a stack it was
        predicted on; ``prob``: its foreground probability, for Split)."""
        self.actions.set_prediction(prediction, image, index=index, prob=prob)
        self._all = review
        cells = int((review["kind"] == "cell").sum()) if review is not None else 0
        misses = int((review["kind"] == "miss").sum()) if review is not None else 0
        self.summary.setText(f"{cells} cells and {misses} likely misses ranked; Next (.) goes "
                             "to the least certain; Accept / Reject / Merge / Split, then "
                             "click the cell")
        self._fill()

    def _fill(self) -> None:
        if self._all is None:
            return
        self.review = self._all.head(self.count.value()).reset_index(drop=True)
        self.list.blockSignals(True)
        self.list.clear()
        self.list.addItems([describe(r) for _, r in self.review.iterrows()])
        self.list.blockSignals(False)
        self._mark()

    def centre(self, row: int) -> np.ndarray:
        """The listed item's centre, in the prediction's pixel indices."""
        r = self.review.iloc[row]
        axes = "zyx" if "bbox_z0" in self.review and r.get("bbox_z0", -1) >= 0 else "yx"
        centre = [(float(r[f"bbox_{a}0"]) + float(r[f"bbox_{a}1"]) - 1) / 2 for a in axes]
        if int(r["plane"]) >= 0:
            centre = [float(r["plane"]), *centre]
        return np.array(centre)

    def _mark(self) -> None:
        if self.marks is not None and self.marks in self.viewer.layers:
            self.viewer.layers.remove(self.marks)
        self.marks = None
        pred = self.actions.prediction
        if pred is None or self.review is None or not len(self.review):
            return
        centres = np.array([self.centre(i) for i in range(len(self.review))])
        sizes = [max(float(r["bbox_y1"] - r["bbox_y0"]), float(r["bbox_x1"] - r["bbox_x0"]))
                 + 6 for _, r in self.review.iterrows()]
        self.marks = upsert_layer(
            self.viewer, centres, MARKS, "points", size=sizes, symbol="square",
            face_color="transparent", border_color=_COLOR, border_width=0.08,
            features={"rank": self.review["rank"].to_numpy()},
            text={"string": "{rank}", "color": _COLOR, "anchor": "upper_left", "size": 10},
            scale=pred.scale[-centres.shape[1]:], translate=pred.translate[-centres.shape[1]:])
        self.viewer.layers.selection.active = pred

    def go_to(self, row: int) -> None:
        """Centre and zoom the view on the listed item ``row`` (0-based); a cell counts as
        looked at (*Accept the cells looked at*)."""
        if self.review is None or not 0 <= row < len(self.review):
            return
        if self.list.currentRow() != row:
            self.list.setCurrentRow(row)  # comes back here through _on_row
            return
        pred = self.actions.prediction
        r = self.review.iloc[row]
        if r["kind"] == "cell":
            self.actions.looked.add(int(r["label"]))
        world = np.asarray(pred.data_to_world(self.centre(row)), float)
        lead = self.viewer.dims.ndim - len(world)
        for k in range(len(world) - self.viewer.dims.ndisplay):
            self.viewer.dims.set_point(lead + k, world[k])
        box = max(float(r["bbox_y1"] - r["bbox_y0"]), float(r["bbox_x1"] - r["bbox_x0"]), 8.0)
        extent = min(pred.data.shape[-2:])
        self.viewer.reset_view()
        scene = getattr(self.viewer, "scene", None)  # napari >= 0.9; before: viewer.camera
        camera = scene.camera if scene is not None else self.viewer.camera
        camera.zoom = camera.zoom * max(1.0, extent / (4.0 * box))
        camera.center = tuple(world[-self.viewer.dims.ndisplay:])
        if self.marks is not None and self.marks in self.viewer.layers:
            colours = np.tile(np.array([[1.0, 0.63, 0.0, 1.0]]), (len(self.review), 1))
            colours[row] = (1.0, 0.19, 1.0, 1.0)
            self.marks.border_color = colours

    def next(self) -> None:
        """Go to the next listed item (the first when none is current)."""
        if self.review is not None and len(self.review):
            self.go_to(min(self.list.currentRow() + 1, len(self.review) - 1))

    def previous(self) -> None:
        """Go to the previous listed item."""
        if self.review is not None and len(self.review):
            self.go_to(max(self.list.currentRow() - 1, 0))

    @guarded
    def _on_row(self, row: int):
        self.go_to(row)

    @guarded
    def _on_next(self, *_):
        self.next()

    @guarded
    def _on_previous(self, *_):
        self.previous()
