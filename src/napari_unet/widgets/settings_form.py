"""Qt controls built from a settings dataclass's fields (help text and bounds in their metadata).

The Predict widget's post-processing controls come from
:class:`napari_unet.core.predict.PostprocessSettings`, as the command line's options do
(:mod:`napari_unet.commands.options`), so both always offer the same settings.
"""

from __future__ import annotations

from dataclasses import fields

from qtpy.QtWidgets import QCheckBox, QDoubleSpinBox, QFormLayout, QSpinBox, QWidget


class SettingsForm(QWidget):
    """One control per field of ``cls``: a check box (bool), a spin box (int, float).

    ``controls[name]`` is the control of a field; :meth:`value` builds ``cls`` from them and
    :meth:`set_value` shows an instance.
    """

    def __init__(self, cls, parent=None):
        super().__init__(parent)
        self.cls = cls
        self.controls: dict = {}
        layout = QFormLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for f in fields(cls):
            meta = f.metadata
            if f.type in (bool, "bool"):
                control = QCheckBox(meta["help"])
                layout.addRow(control)
            else:
                control = QDoubleSpinBox() if f.type in (float, "float") else QSpinBox()
                if isinstance(control, QDoubleSpinBox):
                    control.setDecimals(2)
                control.setRange(meta["low"], meta["high"])
                control.setSingleStep(meta["step"])
                control.setToolTip(meta["help"])
                layout.addRow(f.name.replace("_", " "), control)
            self.controls[f.name] = control
        self.set_value(cls())

    def set_value(self, settings) -> None:
        for name, control in self.controls.items():
            value = getattr(settings, name)
            if isinstance(control, QCheckBox):
                control.setChecked(bool(value))
            else:
                control.setValue(value)

    def value(self):
        values = {}
        for name, control in self.controls.items():
            values[name] = control.isChecked() if isinstance(control, QCheckBox) else control.value()
        return self.cls(**values)
