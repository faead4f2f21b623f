"""The settings form of the "Train U-Net" widget, generated from the settings' one declaration.

First what a biologist changes: the (image, labels) pairs, the budget (steps, minutes), the
device, the model to start from; the network and optimiser settings fold under *Advanced*
(:attr:`TrainForm.advanced`, which the widget places below Start). The controls are those of
:class:`napari_unet.core.training.TrainConfig`'s ``basic`` and ``advanced`` fields
(:mod:`napari_unet.widgets.settings_form`); the data rows and what they hold are a
:class:`~napari_unet.widgets.train_pairs.TrainPairs`. Every value the user has not set is the plan's
(:func:`napari_unet.core.training.plan`, what ``napari-unet train`` and the Trainer resolve
too), recomputed when the pairs, the budget or the device change, and the reasons line says why
("tile 156: the CPU recipe").
"""

from __future__ import annotations

import dataclasses

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_unet.widgets.settings_form import label_of, make_control, read_value, show_value
from napari_unet.widgets.train_pairs import TrainPairs

#: the augmentation settings the form shows (AugmentConfig's fields)
AUGMENT_FIELDS = ("elastic_sigma", "rotate", "flip")


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class TrainForm(QWidget):
    """Every training setting; :meth:`config` plans them for the data of :attr:`data`.

    ``data`` is the :class:`~napari_unet.widgets.train_pairs.TrainPairs` of the form's data
    rows (``data.training_pairs()`` reads them); ``controls[name]`` is the control of a
    :class:`TrainConfig` field; ``chosen`` the fields the user set (the others show the plan's
    values).
    """

    def __init__(self, napari_viewer, parent=None):
        from napari_unet.core.training.config import setting_fields

        super().__init__(parent)
        self.viewer = napari_viewer
        self.fields = {f.name: f for w in ("basic", "advanced") for f in setting_fields(where=w)}
        self.controls: dict[str, QWidget] = {}
        self.chosen: set[str] = set()
        self._updating = True  # no plan until every control exists
        self.init_model = None
        self.data = TrainPairs(napari_viewer, self.replan)
        basic = QFormLayout()
        self.data.add_rows(basic)
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
        spacing = self.data.volume_spacing()
        out.update(ndim=2 if spacing is None else 3, spacing=spacing)
        if "augment" in self.chosen:
            out["augment"] = self.augment_config()
        return out

    def plan(self, *, fine_tuning: bool = False, architecture=None):
        """The plan of the form's choices for its pairs, device and processes."""
        from napari_unet.core.training.plan import plan

        return plan(self.choices(), self.data.data_summary(), processes=self.nproc(),
                    fine_tuning=fine_tuning, architecture=architecture)

    def replan(self, *_) -> None:
        """Show the plan's values in the controls the user did not set, and its reasons."""
        from napari_unet.core.training.recipes import interactive_budget

        if self._updating:
            return
        self._updating = True
        try:
            spacing = self.data.volume_spacing()
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

    # ------------------------------------------------------------------ processes, augmentation
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
