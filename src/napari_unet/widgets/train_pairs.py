"""The data a training learns from, in the Train U-Net widget: which (image, labels) layer
pairs, 2D planes or whole volumes, and what counts in them.

:class:`TrainPairs` holds the form's data rows (the image and labels pickers, the list of more
pairs, "labels are complete", "train a 2D model on the shown plane") and reads them: the layer
pairs, the voxel spacing (None for 2D), the core :class:`~napari_unet.core.training.data.TrainingPair`
objects, their shapes for the plan and the one line that says which pixels count. The settings
rows are :class:`~napari_unet.widgets.train_form.TrainForm`'s.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from qtpy.QtWidgets import QCheckBox, QFormLayout, QHBoxLayout, QListWidget, QPushButton

from napari_unet.widgets import volume
from napari_unet.widgets.common import (
    LayerCombo,
    background_mask,
    current_plane,
    regions_mask,
    spatial_shape,
)

__all__ = ["TrainPairs"]


class TrainPairs:
    """The data rows of the Train form and what they hold; ``changed`` (a callable) is called
    when the pairs, or whether they are volumes, change."""

    def __init__(self, napari_viewer, changed: Callable[..., None]) -> None:
        from napari.layers import Image, Labels

        self.viewer = napari_viewer
        self.image_combo = LayerCombo(napari_viewer, Image)
        self.labels_combo = LayerCombo(napari_viewer, Labels)
        self.pairs = QListWidget()
        self.pairs.setMaximumHeight(70)
        self.pairs.setToolTip("Extra (image, labels) pairs; with none, the pair above is used.")
        self.add_button, self.remove_button = QPushButton("Add pair"), QPushButton("Remove")
        self.add_button.clicked.connect(self._on_add_pair)
        self.remove_button.clicked.connect(lambda: self.pairs.takeItem(self.pairs.currentRow()))
        self.complete = QCheckBox("labels are complete (every unpainted pixel is background)")
        self.complete.setToolTip(
            "Off (default): only the painted cells, a band around them (or the 'annotated "
            "regions'), and the Background brush strokes count; unpainted cells elsewhere are "
            "not taught as background. On: the whole labels layer is a complete annotation.")
        self.planes = QCheckBox("volume: train a 2D model on the shown plane instead")
        self.planes.setToolTip(
            "A 3D image layer trains the 3D U-Net (Çiçek et al. 2016) on the whole volume: only "
            "the slices marked in Annotate cells count, the voxel spacing is the layer's scale "
            "(coarse z: anisotropic pooling). On: the plane shown now trains a 2D U-Net, as for "
            "a 2D image; Predict then segments stacks plane by plane.")
        for box in (self.image_combo, self.labels_combo):
            box.currentIndexChanged.connect(changed)
        self.pairs.model().rowsInserted.connect(changed)
        self.pairs.model().rowsRemoved.connect(changed)
        self.planes.toggled.connect(changed)

    def add_rows(self, form: QFormLayout) -> None:
        """Add the data rows to the form."""
        form.addRow("image", self.image_combo)
        form.addRow("labels", self.labels_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        form.addRow(buttons)
        form.addRow("more pairs", self.pairs)
        form.addRow(self.complete)
        form.addRow(self.planes)

    def _on_add_pair(self) -> None:
        image, labels = self.image_combo.layer(), self.labels_combo.layer()
        if image is not None and labels is not None:
            self.pairs.addItem(f"{image.name} | {labels.name}")

    def layer_pairs(self) -> list:
        """(image layer, labels layer) pairs: the list, or the chosen pair when the list is empty."""
        names = [self.pairs.item(i).text().split(" | ") for i in range(self.pairs.count())]
        layers = self.viewer.layers
        pairs = [(layers[a], layers[b]) for a, b in names if a in layers and b in layers]
        if not pairs:
            image, labels = self.image_combo.layer(), self.labels_combo.layer()
            if image is None or labels is None:
                raise ValueError(
                    "pairs: choose an image and a labels layer (Annotate cells makes one), "
                    "or add pairs to the list"
                )
            pairs = [(image, labels)]
        return pairs

    def volume_spacing(self) -> tuple[float, float, float] | None:
        """The voxel spacing (Z, Y, X) when the pairs train a 3D model, else None (2D).

        3D: the first pair's image layer is a volume and "train a 2D model on the shown
        plane" is off. The spacing is that image layer's ``scale``.
        """
        try:
            image = self.layer_pairs()[0][0]
        except ValueError:  # no labels chosen yet: the image alone decides
            image = self.image_combo.layer()
        if self.planes.isChecked() or not volume.is_volume(image):
            return None
        return volume.layer_spacing(image)

    def data_summary(self):
        """The shapes, channels and spacing of the pairs (None when none is chosen yet)."""
        from napari_unet.core.training.plan import DataSummary

        try:
            pairs = self.layer_pairs()
        except ValueError:
            return None
        spacing = self.volume_spacing()
        keep = 3 if spacing is not None else 2
        image = pairs[0][0]
        channels = int(image.data.shape[-1]) if image.rgb else 1
        return DataSummary(tuple(spatial_shape(lab)[-keep:] for _, lab in pairs), channels,
                           spacing)

    def training_pairs(self) -> list:
        """Core TrainingPair objects: whole volumes (3D) or the shown plane of every pair."""
        if self.volume_spacing() is not None:
            return volume.volume_pairs(self.viewer, self.layer_pairs(),
                                       complete=self.complete.isChecked())
        from napari_unet.core.training.data import TrainingPair

        out = []
        for image_layer, labels_layer in self.layer_pairs():
            image, _ = current_plane(image_layer, self.viewer)
            labels, index = current_plane(labels_layer, self.viewer)
            if not np.any(labels):
                raise ValueError(
                    f"labels: '{labels_layer.name}' has no cells on this plane; paint a few "
                    "(Annotate cells > New cell) before training"
                )
            annotated = regions_mask(self.viewer, labels.shape, index)
            background = background_mask(self.viewer, image_layer.name, labels.shape, index)
            channel_axis = -1 if image_layer.rgb else None
            out.append(TrainingPair(image, labels, annotated=annotated, channel_axis=channel_axis,
                                    background=background, sparse=not self.complete.isChecked()))
        return out

    def annotation_summary(self, *, depth: int) -> str:
        """One line: the rule that decides which pixels count, and how many cells and pixels
        (for volumes also the spacing and the pooling of a network of ``depth`` levels)."""
        from napari_unet.core.targets.sparse import describe_annotation

        spacing = self.volume_spacing()
        if spacing is not None:
            from napari_unet.core.model.shapes import anisotropic_pool

            lines = [volume.describe_volume(p.labels, p.annotated)
                     for p in self.training_pairs()]
            pool = anisotropic_pool(spacing, int(depth))
            extra = f" (all {len(lines)} volumes)" if len(lines) > 1 else ""
            return (f"What counts: {lines[0]}{extra}; voxel spacing (z, y, x) "
                    f"{tuple(round(s, 4) for s in spacing)} from the layer scale, pooling "
                    f"{' '.join('×'.join(map(str, f)) for f in pool)}")
        infos = [describe_annotation(p.labels, annotated=p.annotated, background=p.background,
                                     sparse=p.sparse) for p in self.training_pairs()]
        text = "What counts: " + infos[0]["text"]
        if len(infos) > 1:
            cells = sum(i["cells"] for i in infos)
            px = sum(i["counted_px"] for i in infos)
            text += f" (all {len(infos)} pairs: {cells} cells, {px} pixels)"
        return text
