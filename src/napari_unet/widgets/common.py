"""Helpers shared by the dock widgets: layer pickers, notifications, planes of stacks, the model registry.

No maths here beyond picking a 2D plane out of a layer and rasterising the "annotated regions".
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np
from psygnal import Signal
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox

logger = logging.getLogger(__name__)

#: Name of the Shapes layer whose rectangles mark where annotation is complete.
REGIONS_LAYER = "annotated regions"


# ----------------------------------------------------------------------------- notifications
def show_error(message: str) -> None:
    from napari.utils.notifications import show_error as _show

    logger.warning(message)
    _show(message)


def show_warning(message: str) -> None:
    from napari.utils.notifications import show_warning as _show

    _show(message)


def show_info(message: str) -> None:
    from napari.utils.notifications import show_info as _show

    _show(message)


def error_message(exc: BaseException) -> str:
    """One line for the user, by the one formatter of every error
    (:func:`napari_unet.errors.format_error`): ours say what to do; a bug says so."""
    from napari_unet.errors import format_error

    return format_error(exc)


def guarded(func):
    """Decorate a Qt slot so that any exception becomes a napari error notification."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            logger.debug("error in %s", func.__name__, exc_info=True)
            show_error(error_message(exc))
            return None

    return wrapper


# ----------------------------------------------------------------------------- layer picker
class LayerCombo(QComboBox):
    """A combo box listing the viewer's layers of one type, kept up to date.

    ``layer_type`` is a napari layer class (e.g. ``napari.layers.Image``); ``none_text`` adds a
    first entry meaning "no layer".
    """

    def __init__(self, viewer, layer_type, *, none_text: str | None = None, parent=None):
        super().__init__(parent)
        self._viewer = viewer
        self._type = layer_type
        self._none_text = none_text
        self.refresh()
        events = viewer.layers.events
        for name in ("inserted", "removed", "moved", "reordered"):
            if hasattr(events, name):
                getattr(events, name).connect(self._on_layers_changed)

    def _on_layers_changed(self, event=None) -> None:
        layer = getattr(event, "value", None)
        if layer is not None and hasattr(layer, "events"):
            layer.events.name.connect(self.refresh)
        self.refresh()

    def refresh(self, event=None) -> None:
        current = self.currentText()
        self.blockSignals(True)
        self.clear()
        if self._none_text is not None:
            self.addItem(self._none_text)
        for layer in self._viewer.layers:
            if isinstance(layer, self._type):
                self.addItem(layer.name)
        index = self.findText(current)
        if index < 0 and self._none_text is None and self.count():
            index = 0
        self.setCurrentIndex(max(index, 0))
        self.blockSignals(False)
        if self.currentText() != current:
            self.currentIndexChanged.emit(self.currentIndex())

    def layer(self):
        """The chosen layer, or None."""
        name = self.currentText()
        if name and name != self._none_text and name in self._viewer.layers:
            layer = self._viewer.layers[name]
            return layer if isinstance(layer, self._type) else None
        return None

    def set_layer(self, layer) -> None:
        self.refresh()
        index = self.findText(layer.name if layer is not None else (self._none_text or ""))
        if index >= 0:
            self.setCurrentIndex(index)


def debounce_timer(parent, slot, ms: int = 300) -> QTimer:
    """A single-shot timer: call ``.start()`` on every change, ``slot`` runs once they stop."""
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(ms)
    timer.timeout.connect(slot)
    return timer


# ----------------------------------------------------------------------------- planes of stacks
def spatial_shape(layer) -> tuple[int, ...]:
    """Shape of the layer's data without a trailing RGB(A) axis."""
    shape = tuple(layer.data.shape)
    if getattr(layer, "rgb", False):
        shape = shape[:-1]
    return shape


def plane_index(layer, viewer) -> tuple[int, ...]:
    """Indices of the leading (non-YX) axes of ``layer`` at the viewer's current position."""
    ndim = len(spatial_shape(layer))
    if ndim <= 2:
        return ()
    point = np.asarray(viewer.dims.point[-layer.ndim :], dtype=float)
    data_point = np.asarray(layer.world_to_data(point), dtype=float)
    shape = spatial_shape(layer)
    return tuple(int(np.clip(round(data_point[i]), 0, shape[i] - 1)) for i in range(ndim - 2))


def current_plane(layer, viewer) -> tuple[np.ndarray, tuple[int, ...]]:
    """The 2D plane (YX, or YXC for RGB) of ``layer`` shown now, as numpy, and its leading index."""
    index = plane_index(layer, viewer)
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    plane = np.asarray(data[index] if index else data)
    return plane, index


def regions_mask(viewer, shape2d: tuple[int, int], index: tuple[int, ...] = ()) -> np.ndarray | None:
    """Union of the rectangles/polygons of the "annotated regions" Shapes layer, or None if none.

    Shapes drawn on a stack count on their own plane only (their leading coordinates must equal
    ``index``); 2D shapes count on every plane.
    """
    if REGIONS_LAYER not in viewer.layers:
        return None
    layer = viewer.layers[REGIONS_LAYER]
    shapes = [np.asarray(v) for v in getattr(layer, "data", [])]
    if not shapes:
        return None
    from skimage.draw import polygon

    mask = np.zeros(shape2d, dtype=bool)
    for vertices in shapes:
        lead = vertices[:, :-2]
        if index and lead.size and not np.allclose(lead[0], index[-lead.shape[1] :], atol=0.5):
            continue
        rr, cc = polygon(vertices[:, -2], vertices[:, -1], shape=shape2d)
        mask[rr, cc] = True
        # Axis-aligned rectangles: polygon() leaves out the far edge; include the closed box.
        r0, c0 = np.clip(np.floor(vertices[:, -2:].min(0)).astype(int), 0, None)
        r1, c1 = np.ceil(vertices[:, -2:].max(0)).astype(int)
        if len(vertices) == 4 and _is_axis_aligned(vertices[:, -2:]):
            mask[r0 : min(r1, shape2d[0]), c0 : min(c1, shape2d[1])] = True
    return mask


#: Suffix of the Labels layer holding an image's explicit background strokes (value != 0).
BACKGROUND_SUFFIX = " background"
#: Suffix of the Labels layer that "Annotate cells" makes for an image's cells.
ANNOTATIONS_SUFFIX = " annotations"


def background_mask(viewer, image_name: str, shape2d, index: tuple[int, ...] = ()):
    """The shown plane of the layer "<image_name> background" as a bool mask, or None.

    The first Labels layer of the image's shape among "<image> background", "<image>
    background (2)", … (the names the Background brush gives); None when there is none or it
    holds nothing on this plane.
    """
    base = image_name + BACKGROUND_SUFFIX
    names = [base] + [f"{base} ({n})" for n in range(2, 10)]
    for name in names:
        if name not in viewer.layers or viewer.layers[name]._type_string != "labels":
            continue
        plane, _ = current_plane(viewer.layers[name], viewer)
        if plane.shape == tuple(shape2d):
            return plane != 0 if np.any(plane) else None
    return None


def image_name_of(labels_layer) -> str:
    """The image name an annotation layer belongs to ("<image> annotations" → "<image>")."""
    name = labels_layer.name
    return name[: -len(ANNOTATIONS_SUFFIX)] if name.endswith(ANNOTATIONS_SUFFIX) else name


def _is_axis_aligned(v: np.ndarray) -> bool:
    return len(np.unique(np.round(v[:, 0], 3))) <= 2 and len(np.unique(np.round(v[:, 1], 3))) <= 2


def upsert_layer(viewer, data, name: str, kind: str, **kwargs):
    """Update the layer ``name`` that this plugin made earlier, or add a new one.

    A layer of the same name that the plugin did not make (no ``metadata["napari_unet"]``) is
    never touched: the new layer gets a fresh name instead.
    """
    tag = kwargs.pop("tag", name)
    if name in viewer.layers:
        layer = viewer.layers[name]
        ours = layer.metadata.get("napari_unet") == tag
        if ours and layer._type_string == kind and layer.data.shape == np.shape(data):
            layer.data = data
            for key in ("translate", "contrast_limits"):
                if key in kwargs:
                    setattr(layer, key, kwargs[key])
            return layer
        if ours:
            viewer.layers.remove(layer)
        else:
            name = f"{name} [napari-unet]"
            if name in viewer.layers:
                viewer.layers.remove(viewer.layers[name])
    add = getattr(viewer, f"add_{kind}")
    metadata = {**kwargs.pop("metadata", {}), "napari_unet": tag}
    return add(data, name=name, metadata=metadata, **kwargs)


# ----------------------------------------------------------------------------- shared models
class SharedModels:
    """Per-viewer place where the Train widget publishes its latest model for the Predict widget.

    Stored on the viewer's window object (see :func:`shared_models`); there are no module-level
    globals, so two viewers never see each other's models.
    """

    changed = Signal(str)

    def __init__(self) -> None:
        self.model: Any = None
        self.metadata: dict = {}
        self.source: str = ""
        #: the model file the published model is (or was saved as), or None
        self.path = None
        #: run folders of this viewer's trainings, oldest first
        self.runs: list = []
        #: training pairs used by this viewer's runs: key (image, labels, plane) -> (name, pair)
        self.pairs: dict = {}
        #: while a finished training's model is being loaded: a call that waits for it and
        #: publishes it (:meth:`wait_for_model`), else None
        self.loading = None

    def publish(self, model, metadata: dict, source: str, *, path=None) -> None:
        self.model, self.metadata, self.source = model, dict(metadata), source
        self.path = path
        self.changed.emit(source)

    def wait_for_model(self) -> None:
        """A training that just ended publishes its model a moment later (it is loaded in a
        worker thread): whoever uses the trained model waits for it here, so that it never
        gets "nothing trained yet", or the model before, in that moment. Returns at once
        when nothing is loading; a ValueError if it is still loading after the wait."""
        if self.loading is None:
            return
        logger.info("loading the trained model…")
        self.loading()  # publishes the model, and the end of the training clears self.loading
        if self.loading is not None:
            raise ValueError("model: still loading the trained model…; press the button again "
                             "in a moment")


def shared_models(viewer) -> SharedModels:
    """The :class:`SharedModels` of ``viewer`` (created on first use)."""
    holder = getattr(viewer, "window", None)
    if holder is None:
        holder = viewer
    registry = getattr(holder, "_napari_unet_models", None)
    if registry is None:
        registry = SharedModels()
        holder._napari_unet_models = registry
    return registry


#: the Labels layer events that mean "the user painted or replaced the data"
LABEL_EDIT_EVENTS = ("paint", "data", "set_data")


def watch_layer(old, new, callback):
    """Move ``callback`` from the edit events of layer ``old`` to those of ``new`` (either may
    be None); returns ``new``, the layer now watched."""
    for layer, action in ((old, "disconnect"), (new, "connect")):
        if layer is None:
            continue
        for ev in LABEL_EDIT_EVENTS:
            if hasattr(layer.events, ev):
                getattr(getattr(layer.events, ev), action)(callback)
    return new
