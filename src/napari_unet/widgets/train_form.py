"""The settings form of the "Train U-Net" widget: layer pairs, network, budget, device, augmentation.

Defaults come from :func:`gui_defaults` for the device found and are explained in tooltips.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QWidget,
)

from napari_unet.widgets import volume
from napari_unet.widgets.common import LayerCombo, background_mask, current_plane, regions_mask


def _spin(cls, lo, hi, value, tip, step=1, decimals=None):
    box = cls(minimum=lo, maximum=hi, singleStep=step)
    if decimals is not None:
        box.setDecimals(decimals)
    box.setValue(value)
    box.setToolTip(tip)
    return box


def gui_defaults(device="auto"):
    """The settings that Start uses untouched: :func:`napari_unet.core.training.gui_defaults`.

    >>> gui_defaults("cpu").tile
    156
    """
    from napari_unet.core.training.config import gui_defaults as core_defaults

    return core_defaults(device)


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class TrainForm(QWidget):
    """Every training setting; :meth:`config` and :meth:`training_pairs` read them."""

    def __init__(self, napari_viewer, parent=None):
        from napari.layers import Image, Labels

        from napari_unet.core.device import describe_devices, pick_device
        from napari_unet.core.training.presets import get_preset

        super().__init__(parent)
        self.viewer = napari_viewer
        defaults = gui_defaults("auto")
        self.defaults = defaults
        why = f"Default chosen for the device found ({pick_device('auto')}): {{}}. "
        preset = get_preset(defaults.preset)
        self.image_combo = LayerCombo(napari_viewer, Image)
        self.labels_combo = LayerCombo(napari_viewer, Labels)
        self.pairs = QListWidget()
        self.pairs.setMaximumHeight(70)
        self.pairs.setToolTip("Extra (image, labels) pairs; with none, the pair above is used.")
        add, remove = QPushButton("Add pair"), QPushButton("Remove")
        add.clicked.connect(self._on_add_pair)
        remove.clicked.connect(lambda: self.pairs.takeItem(self.pairs.currentRow()))
        self.preset = QComboBox()
        self.preset.addItems(["adamw", "paper"])
        self.preset.setCurrentText(defaults.preset)
        self.preset.setToolTip("adamw: fast convergence (default); paper: SGD, momentum 0.99.")
        self.depth = _spin(QSpinBox, 1, 6, defaults.depth, why.format(defaults.depth)
                           + "The paper: 4 poolings.")
        self.base = _spin(QSpinBox, 2, 128, defaults.base_channels,
                          why.format(defaults.base_channels)
                          + "Narrow on a CPU (fast), the paper's 64 on a GPU.")
        self.steps = _spin(QSpinBox, 1, 1_000_000, defaults.steps, why.format(defaults.steps)
                           + "Training steps (one batch each).", 100)
        self.minutes = _spin(QDoubleSpinBox, 0.0, 10_000.0, (defaults.time_limit or 0) / 60,
                             why.format(f"{(defaults.time_limit or 0) / 60:g} min")
                             + "Time budget in minutes; 0 = no limit (the steps decide). "
                             "Training ends at whichever budget comes first.")
        self.lr = _spin(QDoubleSpinBox, 1e-5, 1.0, defaults.lr or preset.lr,
                        why.format(defaults.lr or preset.lr)
                        + "Peak learning rate (adamw: warm-up then cosine decay). On a CPU "
                        "the default follows the budget: 1e-3 once steps >= 8000 and the time "
                        "is 0 or >= 10 min. "
                        "Lower it if the loss jumps or becomes NaN. Continue training and "
                        "Fine-tune from… use a quarter of it.", 1e-3, decimals=5)
        self.batch = _spin(QSpinBox, 1, 64, defaults.batch_size or preset.batch_size,
                           why.format(defaults.batch_size or preset.batch_size)
                           + "Tiles per step.")
        self.tile = _spin(QSpinBox, 0, 2048, defaults.tile or 0,
                          why.format(defaults.tile or "auto")
                          + "Network input side in pixels (0 = auto: the smallest valid tile "
                          "covering the image, at most 572). Invalid sides are refused with the "
                          "nearest valid one.", 4)
        self.dropout = _spin(QDoubleSpinBox, 0.0, 0.9, defaults.dropout,
                             why.format(defaults.dropout)
                             + "Drop-out at the end of the contracting path (paper: 0.5); "
                             "0 converges faster in short runs.", 0.1, decimals=2)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.device.setToolTip(describe_devices())
        self.devices_label = QLabel(describe_devices().splitlines()[0])
        self.gpus = _spin(QSpinBox, 1, 1, 1, "Train on this many GPUs at once (one process "
                          "each, torchrun); the batch is split between them.")
        self.gpus_label = QLabel("GPUs")
        aug = defaults.augment
        self.augment = QCheckBox("augmentation")
        self.augment.setChecked(True)
        self.augment.setToolTip(
            "Random elastic deformation, rotation, flips, shifts and gray-value changes of every "
            "sample (the paper's recipe; needed for few annotations). Off: faster convergence "
            "on easy data, worse generalisation.")
        self.elastic = _spin(QDoubleSpinBox, 0.0, 50.0, aug.elastic_sigma,
                             "Elastic deformation: std (px) of the 3×3 grid displacements "
                             "(paper: 10); 0 = off.")
        self.rotate = QCheckBox("rotate")
        self.rotate.setChecked(aug.rotate)
        self.flip = QCheckBox("flip")
        self.flip.setChecked(aug.flip)
        self.preview_aug = QPushButton("Preview augmentation")
        self.live = QCheckBox("live prediction preview")
        self.live.setChecked(True)
        self.live.setToolTip("Every few seconds, predict the visible part of the image.")
        self.finetune = QPushButton("Fine-tune from…")
        from napari_unet.models import model_names

        self.shipped = QComboBox()  # the shipped starting models (napari_unet.models)
        self.shipped.addItems(["shipped model…", *model_names()])
        self.shipped.setToolTip("Fine-tune a model shipped with napari-unet (no download).")
        self.init_label = QLabel("from scratch")
        self.init_model = None
        from napari_unet.engine.runs import default_runs_root

        self.runs_root = QLineEdit(str(default_runs_root()))
        self.runs_root.setToolTip(
            "Every training writes a run folder here: the annotations used, settings, "
            "checkpoints (last/best), metrics and the final model. Default: $NAPARI_UNET_RUNS "
            "or ~/.napari-unet/runs."
        )
        # sparse-annotation rule (issue 11): what counts in the loss
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
        form = QFormLayout(self)
        form.addRow("image", self.image_combo)
        form.addRow("labels", self.labels_combo)
        row = QHBoxLayout()
        row.addWidget(add)
        row.addWidget(remove)
        form.addRow(row)
        form.addRow("more pairs", self.pairs)
        form.addRow("preset", self.preset)
        form.addRow("depth", self.depth)
        form.addRow("base channels", self.base)
        form.addRow("steps", self.steps)
        form.addRow("time (min)", self.minutes)
        row = QHBoxLayout()
        for label, w in (("lr", self.lr), ("batch", self.batch)):
            row.addWidget(QLabel(label))
            row.addWidget(w, 1)
        form.addRow("optimiser", row)
        row = QHBoxLayout()
        for label, w in (("tile", self.tile), ("drop-out", self.dropout)):
            row.addWidget(QLabel(label))
            row.addWidget(w, 1)
        form.addRow("network", row)
        form.addRow("device", self.device)
        form.addRow("", self.devices_label)
        form.addRow(self.gpus_label, self.gpus)
        self.set_gpu_limit(_cuda_devices())
        form.addRow("elastic σ", self.elastic)
        self.augment.toggled.connect(self._on_augment_toggled)
        self.preset.currentTextChanged.connect(self._on_preset_changed)
        #: the rate the form itself last showed; a budget change moves it while it is shown
        self._auto_lr = float(self.lr.value())
        self.steps.valueChanged.connect(self._on_budget_changed)
        self.minutes.valueChanged.connect(self._on_budget_changed)
        row = QHBoxLayout()
        for w in (self.augment, self.rotate, self.flip, self.preview_aug):
            row.addWidget(w)
        form.addRow("augment", row)
        row = QHBoxLayout()
        row.addWidget(self.finetune)
        row.addWidget(self.shipped)
        row.addWidget(self.init_label)
        form.addRow(row)
        form.addRow(self.live)
        form.addRow("runs folder", self.runs_root)
        form.addRow(self.complete)
        form.addRow(self.planes)
        #: "2d" or "3d": the kind of training the spin boxes show the defaults of
        self.kind = "2d"
        for box in (self.image_combo, self.labels_combo):
            box.currentIndexChanged.connect(self.sync_defaults)
        self.pairs.model().rowsInserted.connect(self.sync_defaults)
        self.pairs.model().rowsRemoved.connect(self.sync_defaults)
        self.planes.toggled.connect(self.sync_defaults)
        self.sync_defaults()

    # ------------------------------------------------------------------ settings and data
    def set_gpu_limit(self, n: int) -> None:
        """Allow 1..``n`` training processes; the GPUs row shows only for ``n`` > 1 (tests set
        2 on a CPU: two gloo processes)."""
        self.gpus.setMaximum(max(int(n), 1))
        for w in (self.gpus, self.gpus_label):
            w.setVisible(n > 1)

    def kind_defaults(self):
        """The defaults of the training the pairs make: 2D (:func:`gui_defaults`) or, for a
        volume, :func:`napari_unet.core.training.gui_defaults_3d` with the layer's spacing."""
        spacing = self.volume_spacing()
        if spacing is None:
            return self.defaults
        from napari_unet.core.training.config import gui_defaults_3d

        return gui_defaults_3d(self.device.currentText(), spacing=spacing)

    def sync_defaults(self, *_) -> None:
        """Show the 3D defaults when the pairs become a volume (and the 2D ones back): a 3D
        U-Net on a CPU is narrower and its tile is chosen per axis. The user's values stay
        while the kind of training stays."""
        kind = "2d" if self.volume_spacing() is None else "3d"
        if kind == self.kind:
            return
        self.kind = kind
        d = self.kind_defaults()
        preset = self.preset.currentText()
        from napari_unet.core.training.presets import get_preset

        for box, value in ((self.depth, d.depth), (self.base, d.base_channels),
                           (self.steps, d.steps or self.steps.value()),
                           (self.minutes, (d.time_limit or 0) / 60),
                           (self.batch, d.batch_size or get_preset(preset).batch_size),
                           (self.tile, d.tile if isinstance(d.tile, int) else 0),
                           (self.dropout, d.dropout)):
            box.setValue(value)
        self._show_lr(d.lr or get_preset(preset).lr)

    def nproc(self) -> int:
        """Training processes of the next Start (1 unless several GPUs are chosen)."""
        return int(self.gpus.value()) if self.gpus.maximum() > 1 else 1

    def _on_preset_changed(self, name: str) -> None:
        from napari_unet.core.training.presets import get_preset

        same = name == self.defaults.preset and self.defaults.lr is not None
        self._show_lr(self.defaults.lr if same else get_preset(name).lr)
        self._on_budget_changed()

    def _show_lr(self, lr: float) -> None:
        self._auto_lr = float(lr)
        self.lr.setValue(lr)

    def _on_budget_changed(self, *_) -> None:
        """On a CPU, the 2D recipe's rate follows the run's length
        (:func:`napari_unet.core.training.cpu_recipe_lr`: 2e-3, 1e-3 for a run of 10 minutes
        and 8000 steps or more) while the rate shown is the form's own; a rate the user typed
        stays."""
        from napari_unet.core.training.config import cpu_recipe_lr

        recipe = (self.kind == "2d" and self.preset.currentText() == "adamw"
                  and self.defaults.lr is not None)  # a GPU's defaults leave the rate unset
        if not recipe or abs(self.lr.value() - self._auto_lr) > 1e-9:
            return
        self._show_lr(cpu_recipe_lr(steps=int(self.steps.value()), time_limit=self._time_limit()))

    def _time_limit(self) -> float | None:
        """The time budget in seconds (None: the minutes box at 0, no limit)."""
        minutes = float(self.minutes.value())
        return minutes * 60 if minutes > 0 else None

    def _on_augment_toggled(self, on: bool) -> None:
        for w in (self.elastic, self.rotate, self.flip):
            w.setEnabled(on)

    def config(self, *, preview: bool = False):
        """The TrainConfig of the form; ``preview`` keeps the augmentation on (for its preview)."""
        from napari_unet.core.augment.pipeline import AugmentConfig

        if self.augment.isChecked() or preview:
            aug = dataclasses.replace(
                self.defaults.augment if isinstance(self.defaults.augment, AugmentConfig)
                else AugmentConfig(),
                elastic_sigma=float(self.elastic.value()), rotate=self.rotate.isChecked(),
                flip=self.flip.isChecked(),
            )
        else:
            aug = AugmentConfig.none()
        spacing = self.volume_spacing()  # 3D: the pooling comes from the spacing (Trainer)
        extra = {} if spacing is None else dict(ndim=3, spacing=spacing)
        return dataclasses.replace(
            self.kind_defaults(), preset=self.preset.currentText(), depth=int(self.depth.value()),
            base_channels=int(self.base.value()), steps=int(self.steps.value()),
            time_limit=self._time_limit(), lr=float(self.lr.value()),
            batch_size=int(self.batch.value()),
            tile=int(self.tile.value()) or None, dropout=float(self.dropout.value()),
            device=self.device.currentText(), augment=aug, **extra,
        )

    def _on_add_pair(self):
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

    def annotation_summary(self) -> str:
        """One line: the rule that decides which pixels count, and how many cells and pixels."""
        from napari_unet.core.targets.sparse import describe_annotation

        if self.volume_spacing() is not None:
            lines = [volume.describe_volume(p.labels, p.annotated)
                     for p in self.training_pairs()]
            from napari_unet.core.model.unet import anisotropic_pool

            spacing = self.volume_spacing()
            pool = anisotropic_pool(spacing, int(self.depth.value()))
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
