"""Qt controls built from a settings dataclass's fields (help text and bounds in their metadata).

The Predict widget's post-processing controls come from
:class:`napari_unet.core.predict.PostprocessSettings`, the Train widget's settings from
:class:`napari_unet.core.training.TrainConfig`, as the command line's options do
(:mod:`napari_unet.commands.options`), so both always offer the same settings.

A field's metadata: ``help`` (the tooltip), ``low`` / ``high`` / ``step`` / ``decimals`` (a
spin box), ``choices`` or ``gui_choices`` (a combo box), ``label`` (else the name), ``scale``
(shown divided by it, e.g. seconds as minutes). A bool is a check box, its text the ``help``
or, where that is long, ``short``.
"""

from __future__ import annotations

from dataclasses import Field, fields

from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QSpinBox, QWidget


def _kind(field: Field) -> str:
    kind = str(field.type)
    if kind in ("bool", str(bool)):
        return "bool"
    if field.metadata.get("gui_choices") or field.metadata.get("choices"):
        return "choice"
    return "int" if kind.startswith(("int", str(int))) else "float"


def label_of(field: Field) -> str:
    """The label of a field's control: its ``label``, else its name with spaces."""
    return field.metadata.get("label", field.name.replace("_", " "))


def make_control(field: Field) -> QWidget:
    """A check box, combo box or spin box for ``field``, its help as the tooltip."""
    meta, kind = field.metadata, _kind(field)
    if kind == "bool":  # its short text where the help is long (the help as the tooltip)
        control = QCheckBox(meta.get("short", meta["help"]))
        control.setToolTip(meta["help"])
        return control
    if kind == "choice":
        control = QComboBox()
        control.addItems([str(c) for c in meta.get("gui_choices") or meta["choices"]])
    else:
        scale = meta.get("scale", 1.0)
        control = QDoubleSpinBox() if kind == "float" else QSpinBox()
        if kind == "float":
            control.setDecimals(meta.get("decimals", 2))
            control.setRange(meta["low"] / scale, meta["high"] / scale)
        else:
            control.setRange(int(meta["low"]), int(meta["high"]))
        control.setSingleStep(meta.get("step") or 1)
    control.setToolTip(meta["help"])
    return control


def show_value(control: QWidget, field: Field, value) -> None:
    """Show ``value`` in ``field``'s control (None or a per-axis tuple: 0, e.g. automatic)."""
    if isinstance(control, QCheckBox):
        control.setChecked(bool(value))
    elif isinstance(control, QComboBox):
        control.setCurrentText(str(value))
    elif value is None or isinstance(value, tuple):
        control.setValue(0)
    elif isinstance(control, QSpinBox):
        control.setValue(round(value))
    else:
        control.setValue(value / field.metadata.get("scale", 1.0))


def read_value(control: QWidget, field: Field):
    """The value a control shows, in the field's units and type (0 in a field whose default is
    None and whose lowest value is 0: None, e.g. an automatic tile or no time limit)."""
    if isinstance(control, QCheckBox):
        return control.isChecked()
    if isinstance(control, QComboBox):
        text = control.currentText()
        return int(text) if _kind(field) == "choice" and str(field.type).startswith("int") \
            else text
    value = control.value()
    if field.default is None and field.metadata.get("low") == 0 and value == 0:
        return None
    if isinstance(control, QSpinBox):
        return int(value)
    return float(value) * field.metadata.get("scale", 1.0)


class SettingsForm(QWidget):
    """One control per field of ``cls``: a check box (bool), a spin box (int, float).

    ``controls[name]`` is the control of a field; :meth:`value` builds ``cls`` from them and
    :meth:`set_value` shows an instance.
    """

    def __init__(self, cls, parent=None):
        super().__init__(parent)
        self.cls = cls
        self.fields = {f.name: f for f in fields(cls)}
        self.controls: dict = {}
        layout = QFormLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for f in fields(cls):
            control = make_control(f)
            if isinstance(control, QCheckBox):
                layout.addRow(control)
            else:
                layout.addRow(label_of(f), control)
            self.controls[f.name] = control
        self.set_value(cls())

    def set_value(self, settings) -> None:
        for name, control in self.controls.items():
            show_value(control, self.fields[name], getattr(settings, name))

    def value(self):
        return self.cls(**{name: read_value(control, self.fields[name])
                           for name, control in self.controls.items()})
