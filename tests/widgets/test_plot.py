"""The live training curves are drawn at once on the GUI thread (QPainter), never by a
worker thread that holds the GIL while napari repaints."""

import math

import numpy as np
import pytest

from napari_unet.widgets.plot import LOSS, MAX_POINTS, SERIES, TrainingPlot, thin

pytestmark = pytest.mark.gui


def _colour_pixels(plot: TrainingPlot, colour: str, *, left: bool) -> int:
    """Pixels of the shown picture close to ``colour`` in the left or right half."""
    image = plot.pixmap().toImage()
    w, h = image.width(), image.height()
    ptr = image.convertToFormat(image.Format.Format_RGB32).constBits()
    ptr.setsize(h * w * 4)
    rgb = np.frombuffer(ptr, np.uint8).reshape(h, w, 4)[..., [2, 1, 0]].astype(int)
    half = rgb[:, : w // 2] if left else rgb[:, w // 2:]
    want = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int(np.sum(np.abs(half - want).sum(axis=-1) < 60))


def test_curves_are_drawn_at_once_on_the_gui_thread(qtbot):
    plot = TrainingPlot(min_interval=0.0)
    qtbot.addWidget(plot)
    plot.resize(500, 260)
    before = plot.renders
    for step in range(1, 51):
        plot.add_loss(step, 1.0 / step)
    # no worker thread: each picture is shown by the call that asked for it
    assert plot.renders == before + 50 and not plot.is_rendering()
    assert _colour_pixels(plot, LOSS, left=True) > 50  # the loss curve, in the left panel
    assert _colour_pixels(plot, LOSS, left=False) == 0
    plot.add_metrics(50, {"iou": 0.5, "instance_f1": 0.4, "note": "text is skipped"})
    plot.add_metrics(60, {"iou": 0.7})
    assert plot.metrics["instance_f1"][-1] != plot.metrics["instance_f1"][-1]  # NaN padded
    assert _colour_pixels(plot, SERIES[0], left=False) > 10  # iou, in the right panel


def test_held_pictures_wait_for_show_held(qtbot):
    plot = TrainingPlot(min_interval=0.0)
    qtbot.addWidget(plot)
    plot.resize(400, 200)
    plot.hold = True
    shown = plot.renders
    plot.add_loss(1, 0.9)
    plot.add_loss(2, 0.8)
    assert plot.renders == shown  # only marked stale
    assert plot.render_if_stale() and plot.renders == shown  # drawn, held
    plot.show_held()
    assert plot.renders == shown + 1
    assert not plot.render_if_stale()  # nothing new since


def test_nonpositive_or_nan_losses_do_not_break_the_picture(qtbot):
    plot = TrainingPlot(min_interval=0.0)
    qtbot.addWidget(plot)
    plot.resize(400, 200)
    for step, loss in enumerate([0.5, float("nan"), -0.1, 0.0, 0.2], start=1):
        plot.add_loss(step, loss)
    assert plot.renders > 0 and not plot.pixmap().isNull()


def test_long_curves_are_thinned_keeping_their_extremes():
    x = list(range(20_000))
    y = [math.sin(i / 50.0) for i in x]
    y[12_345] = 5.0  # a spike must survive the thinning
    tx, ty = thin(x, y)
    assert len(tx) <= MAX_POINTS + 2 and 5.0 in ty.tolist()
    assert np.all(np.diff(tx) > 0)


def test_a_new_picture_repaints_the_plot_and_never_asks_for_a_layout(qtbot):
    """A ``QLabel`` given a new pixmap asked its parents for a new layout at every picture,
    and napari's main window then laid out its docks and composed itself a second time."""
    from qtpy.QtCore import QEvent, QObject
    from qtpy.QtWidgets import QVBoxLayout, QWidget

    parent = QWidget()
    QVBoxLayout(parent).addWidget(plot := TrainingPlot(min_interval=0.0))
    qtbot.addWidget(parent)
    parent.resize(520, 300)
    parent.show()
    qtbot.waitExposed(parent)
    plot.add_loss(1, 1.0)
    qtbot.wait(20)

    class LayoutRequests(QObject):
        seen = 0

        def eventFilter(self, obj, event):
            if event.type() == QEvent.Type.LayoutRequest:
                LayoutRequests.seen += 1
            return False

    counter = LayoutRequests()
    parent.installEventFilter(counter)
    shown = plot.renders
    for step in range(2, 40):
        plot.add_loss(step, 1.0 / step)
    qtbot.wait(50)
    assert plot.renders == shown + 38 and LayoutRequests.seen == 0
    # what the widget paints is the picture
    assert plot.grab().toImage() == plot.pixmap().toImage()
    assert _colour_pixels(plot, LOSS, left=True) > 50
