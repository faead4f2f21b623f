"""Live training curves, drawn with QPainter on the GUI thread in about a millisecond.

Not matplotlib: a matplotlib figure costs 0.1-0.5 s of CPU per picture, and a worker thread
does not help, since matplotlib holds Python's GIL while it draws, so every Python call of the
GUI thread during a render (napari's paint handlers, the event filters) waits for it: napari's
window stalled for 50-65 ms at each repaint while a training ran. A plot of a few hundred
points needs none of that: :meth:`TrainingPlot.render` draws the two
panels (training loss, log scale when positive; validation metrics) into a pixmap with
QPainter — axes, three ticks per axis, a legend — at most once per ``min_interval`` seconds.

With ``hold`` set (the Train widget, while training) new data only mark the plot stale: the
widget's progress update draws it (:meth:`TrainingPlot.render_if_stale`) and shows it
(:meth:`TrainingPlot.show_held`) in the same repaint as the rest of the progress.

The widget paints its picture itself (:meth:`TrainingPlot.paintEvent`) instead of being a
``QLabel`` given a pixmap: ``QLabel.setPixmap`` asks its parents for a new layout even when
the size stays, and napari's main window then lays out its docks and repaints itself — a
second window composition per picture (15 ms each in Xvfb's software OpenGL).
"""

from __future__ import annotations

import math
import time

import numpy as np
from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen, QPixmap
from qtpy.QtWidgets import QSizePolicy, QWidget

BACKGROUND = "#262930"
AXES = "#888888"
TEXT = "#ffffff"
LOSS = "#f0a030"
#: colours of the validation series, in order (matplotlib's tab10)
SERIES = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
#: at most this many points per curve are drawn (a min/max envelope per bucket beyond)
MAX_POINTS = 800


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    """Three tick values spanning [lo, hi] (geometric on a log axis).

    >>> _ticks(0.0, 1.0, False)
    [0.0, 0.5, 1.0]
    >>> [round(t, 3) for t in _ticks(0.01, 1.0, True)]
    [0.01, 0.1, 1.0]
    """
    if log:
        return [float(10 ** v) for v in np.linspace(math.log10(lo), math.log10(hi), 3)]
    return [float(v) for v in np.linspace(lo, hi, 3)]


def _label(value: float) -> str:
    """A short tick label.

    >>> _label(0.000123), _label(0.25), _label(1500.0)
    ('0.00012', '0.25', '1.5e+03')
    """
    return f"{value:.2g}"


def thin(xs: list[float], ys: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """The points of a curve, at most about :data:`MAX_POINTS` (each bucket's min and max).

    >>> x, y = thin(list(range(10_000)), [float(i % 7) for i in range(10_000)])
    >>> len(x) <= 2 * 400 + 2, float(y.min()), float(y.max())
    (True, 0.0, 6.0)
    """
    x, y = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    if len(x) <= MAX_POINTS:
        return x, y
    buckets = np.array_split(np.arange(len(x)), MAX_POINTS // 2)
    keep = []
    for b in buckets:
        yb = y[b]
        if not np.isfinite(yb).any():
            continue
        lo, hi = b[np.nanargmin(yb)], b[np.nanargmax(yb)]
        keep.extend(sorted({int(lo), int(hi)}))
    keep = np.array(keep, dtype=np.int64)
    return x[keep], y[keep]


class TrainingPlot(QWidget):
    """Training loss (left) and validation metrics (right) against the step.

    ``steps``/``losses`` and ``val_steps``/``metrics`` hold the data; :meth:`add_loss` and
    :meth:`add_metrics` append and redraw (at most every ``min_interval`` seconds).
    """

    def __init__(self, parent=None, *, min_interval: float = 0.5):
        super().__init__(parent)
        self.setMinimumHeight(180)
        self.setMinimumWidth(200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)  # paintEvent fills it all
        self._picture = QPixmap()
        self._min_interval = min_interval
        self._last_draw = 0.0
        #: number of pictures shown (tests and benchmarks)
        self.renders = 0
        #: keep finished pictures for :meth:`show_held` instead of showing them at once
        self.hold = False
        self._held = None
        self._stale = False
        self.clear()

    # ------------------------------------------------------------------ data
    def clear(self) -> None:
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.val_steps: list[int] = []
        self.metrics: dict[str, list[float]] = {}
        self._redraw()

    def add_loss(self, step: int, loss: float) -> None:
        self.steps.append(int(step))
        self.losses.append(float(loss))
        if self.hold:
            self._stale = True
        else:
            self._maybe_redraw()

    def add_metrics(self, step: int, metrics: dict) -> None:
        values = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        if not values:
            return
        self.val_steps.append(int(step))
        for key, value in values.items():
            series = self.metrics.setdefault(key, [float("nan")] * (len(self.val_steps) - 1))
            series.append(value)
        for series in self.metrics.values():  # keys missing this time
            if len(series) < len(self.val_steps):
                series.append(float("nan"))
        if self.hold:
            self._stale = True
        else:
            self._redraw()

    def flush(self) -> None:
        self._redraw()

    def render_if_stale(self) -> bool:
        """Render if data came since the last picture and that one is at least
        ``min_interval`` s old; True if it rendered."""
        if not self._stale or time.monotonic() - self._last_draw < self._min_interval:
            return False
        self._redraw()
        return True

    def is_rendering(self) -> bool:
        """Always False: a picture is drawn at once (kept for the widget's and tests' waits)."""
        return False

    # ------------------------------------------------------------------ rendering
    def _maybe_redraw(self) -> None:
        if time.monotonic() - self._last_draw >= self._min_interval:
            self._redraw()

    def sizeHint(self) -> QSize:
        # constant: a new picture never re-lays out or resizes the window (a resized canvas
        # is a costly repaint)
        return QSize(500, 260)

    def minimumSizeHint(self) -> QSize:
        return QSize(200, 180)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._redraw()

    def _redraw(self) -> None:
        self._last_draw = time.monotonic()
        self._stale = False
        self._show(self.render((max(self.width(), 200), max(self.height(), 180))))

    def show_held(self) -> None:
        """Show the newest picture kept while ``hold`` was set (if any)."""
        pixmap, self._held = self._held, None
        if pixmap is not None:
            self._show(pixmap, force=True)

    def _show(self, pixmap: QPixmap, force: bool = False) -> None:
        if self.hold and not force:
            self._held = pixmap
            return
        self._held = None
        self._picture = pixmap
        self.update()  # a repaint of this widget only: no layout request (see the module)
        self.renders += 1

    def pixmap(self) -> QPixmap:
        """The picture shown (null before the first)."""
        return self._picture

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        try:
            painter.fillRect(self.rect(), QColor(BACKGROUND))
            if not self._picture.isNull():
                x = (self.width() - self._picture.width()) // 2
                y = (self.height() - self._picture.height()) // 2
                painter.drawPixmap(x, y, self._picture)
        finally:
            painter.end()

    def render(self, size: tuple[int, int]) -> QPixmap:
        """The two panels drawn at ``size`` (width, height) pixels."""
        w, h = int(size[0]), int(size[1])
        pixmap = QPixmap(w, h)
        pixmap.fill(QColor(BACKGROUND))
        painter = QPainter(pixmap)
        try:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            font = QFont(painter.font())
            font.setPointSizeF(7.0)
            painter.setFont(font)
            half = w / 2
            losses = [(s, v) for s, v in zip(self.steps, self.losses, strict=True)
                      if math.isfinite(v)]
            self._panel(painter, QRectF(0, 0, half, h), "training loss",
                        [("loss", LOSS, [s for s, _ in losses], [v for _, v in losses], False)],
                        log=bool(losses) and min(v for _, v in losses) > 0)
            series = [(key, SERIES[i % len(SERIES)], self.val_steps, values, True)
                      for i, (key, values) in enumerate(self.metrics.items())]
            self._panel(painter, QRectF(half, 0, w - half, h), "validation", series,
                        log=False, legend=True)
        finally:
            painter.end()
        return pixmap

    def _panel(self, painter: QPainter, box: QRectF, title: str, series, *, log: bool,
               legend: bool = False) -> None:
        """One panel: title, axes with three ticks each, the curves (and a legend)."""
        fm = painter.fontMetrics()
        th = fm.height()
        plot = QRectF(box.left() + 6 + fm.horizontalAdvance("0.0000"), box.top() + th + 6,
                      box.width() - fm.horizontalAdvance("0.0000") - 16,
                      box.height() - 3 * th - 10)
        painter.setPen(QColor(TEXT))
        painter.drawText(QRectF(box.left(), box.top() + 2, box.width(), th),
                         Qt.AlignmentFlag.AlignHCenter, title)
        painter.setPen(QPen(QColor(AXES), 1))
        painter.drawRect(plot)
        points = [(x, y) for _, _, xs, ys, _ in series for x, y in zip(xs, ys, strict=True)
                  if math.isfinite(y) and (not log or y > 0)]
        if not points or plot.width() < 10 or plot.height() < 10:
            return
        xs_all = [p[0] for p in points]
        ys_all = [p[1] for p in points]
        x0, x1 = float(min(xs_all)), float(max(xs_all))
        y0, y1 = float(min(ys_all)), float(max(ys_all))
        if x1 <= x0:
            x0, x1 = x0 - 1, x1 + 1
        if log:
            y0, y1 = math.log10(y0), math.log10(y1)
        if y1 <= y0:
            y0, y1 = y0 - 0.5, y1 + 0.5

        def to_px(x: float, y: float) -> QPointF:
            yy = math.log10(y) if log else y
            return QPointF(plot.left() + (x - x0) / (x1 - x0) * plot.width(),
                           plot.bottom() - (yy - y0) / (y1 - y0) * plot.height())

        painter.setPen(QColor(TEXT))
        lo, hi = (10 ** y0, 10 ** y1) if log else (y0, y1)
        for t in _ticks(lo, hi, log):
            p = to_px(x0, t)
            painter.drawText(QRectF(box.left(), p.y() - th / 2, plot.left() - box.left() - 3, th),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                             _label(t))
        for t in _ticks(x0, x1, False):
            p = to_px(t, lo)
            painter.drawText(QRectF(p.x() - 30, plot.bottom() + 2, 60, th),
                             Qt.AlignmentFlag.AlignHCenter, f"{t:.0f}")
        painter.drawText(QRectF(plot.left(), plot.bottom() + th + 2, plot.width(), th),
                         Qt.AlignmentFlag.AlignHCenter, "step")
        painter.setClipRect(plot)
        _draw_curves(painter, series, to_px, log)
        painter.setClipping(False)
        if legend:
            _draw_legend(painter, plot, series, th)


def _draw_curves(painter: QPainter, series, to_px, log: bool) -> None:
    """Each series as a polyline (gaps at non-finite values; on a log axis, at values <= 0),
    with dots at the last 200 points of the series that want markers."""
    for _name, colour, xs, ys, markers in series:
        x, y = thin(list(xs), list(ys))
        ok = np.isfinite(y) & ((y > 0) if log else True)
        path, started = QPainterPath(), False
        dots = []
        for xv, yv, good in zip(x, y, ok, strict=True):
            if not good:
                started = False
                continue
            p = to_px(float(xv), float(yv))
            if started:
                path.lineTo(p)
            else:
                path.moveTo(p)
                started = True
            dots.append(p)
        painter.setPen(QPen(QColor(colour), 1.2))
        painter.drawPath(path)
        if markers:
            painter.setBrush(QColor(colour))
            for p in dots[-200:]:
                painter.drawEllipse(p, 2.0, 2.0)
            painter.setBrush(Qt.BrushStyle.NoBrush)


def _draw_legend(painter: QPainter, plot: QRectF, series, th: float) -> None:
    """A line of each series' colour and its name, top left inside the plot."""
    for i, (name, colour, *_rest) in enumerate(series):
        y = plot.top() + 3 + i * th
        painter.setPen(QPen(QColor(colour), 2))
        painter.drawLine(QPointF(plot.left() + 4, y + th / 2),
                         QPointF(plot.left() + 16, y + th / 2))
        painter.setPen(QColor(TEXT))
        painter.drawText(QRectF(plot.left() + 19, y, plot.width() - 20, th),
                         Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, name)
