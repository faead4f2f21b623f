"""The settings form of the "Train U-Net" widget, generated from the settings' one declaration.

First what a biologist changes: the (image, labels) pairs, the budget (steps, minutes), the
device, the model to start from; the network and optimiser settings fold under *Advanced*
(:attr:`TrainForm.advanced`, which the widget places below Start). The controls are those of
:class:`napari_unet.core.training.TrainConfig`'s ``basic`` and ``advanced`` fields
(:mod:`napari_unet.widgets.settings_form`). Every value the user has not set is the plan's
(:func:`napari_unet.core.training.plan`, what ``napari-unet train`` and the Trainer resolve
too), recomputed when the pairs, the budget or the device change, and the reasons line says why
("tile 156: the CPU recipe").
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
    QVBoxLayout,
    QWidget,
)

from napari_unet.widgets import volume
from napari_unet.widgets.common import (
    LayerCombo,
    background_mask,
    current_plane,
    regions_mask,
    spatial_shape,
)
from napari_unet.widgets.settings_form import label_of, make_control, read_value, show_value

#: the augmentation settings the form shows (AugmentConfig's fields)
AUGMENT_FIELDS = ("elastic_sigma", "rotate", "flip")


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class TrainForm(QWidget):
    """Every training setting; :meth:`config` plans them, :meth:`training_pairs` reads the data.

    ``controls[name]`` is the control of a :class:`TrainConfig` field; ``chosen`` the fields the
    user set (the others show the plan's values).
    """

    def __init__(self, napari_viewer, parent=None):
        from napari.layers import Image, Labels

        from napari_unet.core.training.config import setting_fields

        super().__init__(parent)
        self.viewer = napari_viewer
        self.fields = {f.name: f for w in ("basic", "advanced") for f in setting_fields(where=w)}
        self.controls: dict[str, QWidget] = {}
        self.chosen: set[str] = set()
        self._updating = True  # no plan until every control exists
        self.init_model = None
        self.image_combo = LayerCombo(napari_viewer, Image)
        self.labels_combo = LayerCombo(napari_viewer, Labels)
        self._build_data_rows()
        basic = QFormLayout()
        basic.addRow("image", self.image_combo)
        basic.addRow("labels", self.labels_combo)
        basic.addRow(self._pair_buttons)
        basic.addRow("more pairs", self.pairs)
        basic.addRow(self.complete)
        basic.addRow(self.planes)
        self._add_controls(basic, "basic")
        self._build_device_rows(basic)
        self._build_start_from(basic)
        self.reasons = QLabel("")
        self.reasons.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(basic)
        layout.addWidget(self.reasons)
        self.advanced = self._build_advanced()
        self._updating = False
        self.replan()

    # ------------------------------------------------------------------ building
    def _build_data_rows(self) -> None:
        self.pairs = QListWidget()
        self.pairs.setMaximumHeight(70)
        self.pairs.setToolTip("Extra (image, labels) pairs; with none, the pair above is used.")
        add, remove = QPushButton("Add pair"), QPushButton("Remove")
        add.clicked.connect(self._on_add_pair)
        remove.clicked.connect(lambda: self.pairs.takeItem(self.pairs.currentRow()))
        self._pair_buttons = QHBoxLayout()
        self._pair_buttons.addWidget(add)
        self._pair_buttons.addWidget(remove)
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
            box.currentIndexChanged.connect(self.replan)
        self.pairs.model().rowsInserted.connect(self.replan)
        self.pairs.model().rowsRemoved.connect(self.replan)
        self.planes.toggled.connect(self.replan)

    def _add_controls(self, form: QFormLayout, section: str) -> None:
        """The generated controls of a section; a user's edit makes the field chosen."""
        from napari_unet.core.training.config import setting_fields

        for f in setting_fields(where=section):
            control = self.controls[f.name] = make_control(f)
            form.addRow(label_of(f), control)
            signal = control.currentTextChanged if isinstance(control, QComboBox) \
                else control.valueChanged
            signal.connect(lambda *_, name=f.name: self._on_edit(name))

    def _build_device_rows(self, form: QFormLayout) -> None:
        from napari_unet.core.device import describe_devices

        self.controls["device"].setToolTip(describe_devices())
        self.devices_label = QLabel(describe_devices().splitlines()[0])
        form.addRow("", self.devices_label)
        self.gpus = QSpinBox(minimum=1, maximum=1)
        self.gpus.setToolTip("Train on this many GPUs at once (one process each, torchrun); "
                             "the batch is split between them.")
        self.gpus_label = QLabel("GPUs")
        self.gpus.valueChanged.connect(self.replan)
        form.addRow(self.gpus_label, self.gpus)
        self.set_gpu_limit(_cuda_devices())

    def _build_start_from(self, form: QFormLayout) -> None:
        from napari_unet.models import model_names

        self.finetune = QPushButton("Fine-tune from…")
        self.shipped = QComboBox()  # the shipped starting models (napari_unet.models)
        self.shipped.addItems(["shipped model…", *model_names()])
        self.shipped.setToolTip("Fine-tune a model shipped with napari-unet (no download).")
        self.init_label = QLabel("from scratch")
        row = QHBoxLayout()
        for w in (self.finetune, self.shipped, self.init_label):
            row.addWidget(w)
        form.addRow("start from", row)

    def _build_advanced(self) -> QWidget:
        from superqt import QCollapsible

        from napari_unet.engine.runs import default_runs_root

        inner = QWidget()
        form = QFormLayout(inner)
        self._add_controls(form, "advanced")
        self.augment = QCheckBox("augmentation")
        self.augment.setChecked(True)
        self.augment.setToolTip(
            "Random elastic deformation, rotation, flips, shifts and gray-value changes of every "
            "sample (the paper's recipe; needed for few annotations). Off: faster convergence "
            "on easy data, worse generalisation.")
        self.elastic = QDoubleSpinBox(minimum=0.0, maximum=50.0, value=10.0)
        self.elastic.setToolTip("Elastic deformation: std (px) of the 3×3 grid displacements "
                                "(paper: 10); 0 = off.")
        self.rotate, self.flip = QCheckBox("rotate"), QCheckBox("flip")
        self.preview_aug = QPushButton("Preview augmentation")
        row = QHBoxLayout()
        for w in (self.augment, self.rotate, self.flip, self.preview_aug):
            row.addWidget(w)
        form.addRow("augment", row)
        form.addRow("elastic σ", self.elastic)
        for box in (self.rotate, self.flip):
            box.setChecked(True)
        self.augment.toggled.connect(self._on_augment_toggled)
        for signal in (self.augment.toggled, self.rotate.toggled, self.flip.toggled,
                       self.elastic.valueChanged):
            signal.connect(lambda *_: self._on_edit("augment"))
        self.live = QCheckBox("live prediction preview")
        self.live.setChecked(True)
        self.live.setToolTip("Every few seconds, predict the visible part of the image.")
        form.addRow(self.live)
        self.runs_root = QLineEdit(str(default_runs_root()))
        self.runs_root.setToolTip(
            "Every training writes a run folder here: the annotations used, settings, "
            "checkpoints (last/best), metrics and the final model. Default: $NAPARI_UNET_RUNS "
            "or ~/.napari-unet/runs.")
        form.addRow("runs folder", self.runs_root)
        box = QCollapsible("Advanced")
        box.addWidget(inner)
        return box

    # ------------------------------------------------------------------ the plan
    def _on_edit(self, name: str) -> None:
        if not self._updating:
            self.chosen.add(name)
            self.replan()

    def choices(self) -> dict:
        """What the user chose: the fields set, the budget, the device and the kind of data."""
        names = (self.chosen & set(self.controls)) | {"steps", "time_limit", "device"}
        out = {name: read_value(self.controls[name], self.fields[name]) for name in names}
        spacing = self.volume_spacing()
        out.update(ndim=2 if spacing is None else 3, spacing=spacing)
        if "augment" in self.chosen:
            out["augment"] = self.augment_config()
        return out

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

    def plan(self, *, fine_tuning: bool = False, architecture=None):
        """The plan of the form's choices for its pairs, device and processes."""
        from napari_unet.core.training.plan import plan

        return plan(self.choices(), self.data_summary(), processes=self.nproc(),
                    fine_tuning=fine_tuning, architecture=architecture)

    def replan(self, *_) -> None:
        """Show the plan's values in the controls the user did not set, and its reasons."""
        from napari_unet.core.training.recipes import interactive_budget

        if self._updating:
            return
        self._updating = True
        try:
            spacing = self.volume_spacing()
            steps, seconds = interactive_budget(self.controls["device"].currentText(),
                                                2 if spacing is None else 3)
            for name, value in (("steps", steps), ("time_limit", seconds)):
                if name not in self.chosen:
                    show_value(self.controls[name], self.fields[name], value)
            planned = self.plan()
            for name, control in self.controls.items():
                if name not in self.chosen:
                    show_value(control, self.fields[name], getattr(planned.config, name))
            shown = [n for n in planned.reasons if n not in self.chosen]
            self.reasons.setText("Plan: " + planned.describe(shown))
        except (ValueError, RuntimeError) as exc:
            self.reasons.setText(f"Cannot start: {self.in_words(exc)}")
        finally:
            self._updating = False

    def in_words(self, exc: Exception) -> str:
        """A settings error with the form's label for the field (``batch_size`` → batch)."""
        field, sep, rest = str(exc).partition(": ")
        if sep and field in self.fields:
            return f"{label_of(self.fields[field])}: {rest}"
        return str(exc)

    def config(self, *, preview: bool = False, fine_tuning: bool = False, architecture=None):
        """The planned TrainConfig of the form (ValueError naming the control when refused:
        the batch rule, the memory check); ``preview`` keeps the augmentation on (for its
        preview)."""
        try:
            config = self.plan(fine_tuning=fine_tuning, architecture=architecture).config
        except ValueError as exc:
            raise ValueError(self.in_words(exc)) from None
        if preview:
            config = dataclasses.replace(config, augment=self.augment_config(preview=True))
        return config

    def augment_config(self, *, preview: bool = False):
        from napari_unet.core.augment.config import AugmentConfig

        if not (self.augment.isChecked() or preview):
            return AugmentConfig.none()
        return AugmentConfig(elastic_sigma=float(self.elastic.value()),
                             rotate=self.rotate.isChecked(), flip=self.flip.isChecked())

    # ------------------------------------------------------------------ settings and data
    def set_gpu_limit(self, n: int) -> None:
        """Allow 1..``n`` training processes; the GPUs row shows only for ``n`` > 1 (tests set
        2 on a CPU: two gloo processes)."""
        self.gpus.setMaximum(max(int(n), 1))
        for w in (self.gpus, self.gpus_label):
            w.setVisible(n > 1)

    def nproc(self) -> int:
        """Training processes of the next Start (1 unless several GPUs are chosen)."""
        return int(self.gpus.value()) if self.gpus.maximum() > 1 else 1

    def _on_augment_toggled(self, on: bool) -> None:
        for w in (self.elastic, self.rotate, self.flip):
            w.setEnabled(on)

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
            from napari_unet.core.model.shapes import anisotropic_pool

            spacing = self.volume_spacing()
            pool = anisotropic_pool(spacing, int(self.controls["depth"].value()))
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
