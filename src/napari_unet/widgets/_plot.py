"""Live training curves: matplotlib rendered off the GUI thread, shown as a picture in Qt.

Drawing two matplotlib axes (log-scale ticks, legend, text) takes 0.1-0.5 s of CPU; on the GUI
thread that freezes napari while training. Here the figure belongs to a plain Agg canvas that only
a worker thread draws (one render at a time, at most every ``min_interval`` seconds); the GUI
thread only turns the finished RGBA buffer into a pixmap. With ``hold`` set (the Train widget,
while training) new data only mark the plot stale: the widget asks for a render
(:meth:`TrainingPlot.render_if_stale`) between two of its repaints, so that the render thread
never competes for the GIL with a repaint, and the finished picture waits for
:meth:`TrainingPlot.show_held`, to be shown in the same repaint as the rest of the progress.
"""

from __future__ import annotations

import math
import time

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QSize, Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QSizePolicy

BACKGROUND = "#262930"
DPI = 100


class TrainingPlot(QLabel):
    """Training loss (left) and validation metrics (right) against the step.

    ``steps``/``losses`` and ``val_steps``/``metrics`` hold the data; :meth:`add_loss` and
    :meth:`add_metrics` append and schedule a redraw (throttled to ``min_interval`` seconds).
    """

    def __init__(self, parent=None, *, min_interval: float = 0.5):
        super().__init__(parent)
        self.setMinimumHeight(180)
        self.setMinimumWidth(200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setStyleSheet(f"background-color: {BACKGROUND};")
        self.figure = Figure(figsize=(5, 2.6), dpi=DPI, facecolor=BACKGROUND)
        FigureCanvasAgg(self.figure)
        self._loss_ax = self.figure.add_subplot(1, 2, 1)
        self._val_ax = self.figure.add_subplot(1, 2, 2)
        self._min_interval = min_interval
        self._last_draw = 0.0
        self._worker = None
        self._dirty = False
        #: number of renders shown (tests and benchmarks)
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
        """Render (in the worker) if data came since the last render and the last one is at
        least ``min_interval`` s old; True if a render was started or scheduled."""
        if not self._stale or time.monotonic() - self._last_draw < self._min_interval:
            return False
        self._redraw()
        return True

    def is_rendering(self) -> bool:
        return self._worker is not None or self._dirty

    # ------------------------------------------------------------------ rendering
    def _maybe_redraw(self) -> None:
        if time.monotonic() - self._last_draw >= self._min_interval:
            self._redraw()

    def sizeHint(self) -> QSize:
        # constant: a new picture (a QLabel's size hint is its pixmap's) never re-lays out or
        # resizes the window (a resized canvas is a costly repaint)
        return QSize(500, 260)

    def minimumSizeHint(self) -> QSize:
        return QSize(200, 180)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._redraw()

    def _redraw(self) -> None:
        """Schedule a render in a worker thread (or mark one pending if a render is running)."""
        from napari.qt.threading import create_worker

        self._last_draw = time.monotonic()
        self._stale = False
        if self._worker is not None:
            self._dirty = True
            return
        self._dirty = False
        data = (list(self.steps), list(self.losses), list(self.val_steps),
                {k: list(v) for k, v in self.metrics.items()})
        size = (max(self.width(), 200), max(self.height(), 180))
        worker = create_worker(self._render, data, size, _start_thread=False)
        worker.returned.connect(self._show)
        worker.finished.connect(self._on_render_finished)
        self._worker = worker
        worker.start()

    def _on_render_finished(self) -> None:
        self._worker = None
        if self._dirty:
            self._redraw()

    def show_held(self) -> None:
        """Show the newest picture kept while ``hold`` was set (if any)."""
        rgba, self._held = self._held, None
        if rgba is not None:
            self._show(rgba, force=True)

    def _show(self, rgba: np.ndarray, force: bool = False) -> None:
        if self.hold and not force:
            self._held = rgba
            return
        self._held = None
        h, w = rgba.shape[:2]
        image = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
        try:
            self.setPixmap(QPixmap.fromImage(image))
        except RuntimeError:  # the widget was deleted while rendering
            return
        self.renders += 1

    def _style(self, ax, title: str) -> None:
        ax.set_facecolor(BACKGROUND)
        ax.set_title(title, color="white", fontsize=9)
        ax.tick_params(colors="white", labelsize=7)
        for spine in ax.spines.values():
            spine.set_color("#888888")
        ax.set_xlabel("step", color="white", fontsize=8)

    def _render(self, data, size) -> np.ndarray:
        """Draw the figure at ``size`` pixels (worker thread); returns an (h, w, 4) uint8 copy."""
        steps, losses, val_steps, metrics = data
        fig = self.figure
        fig.set_size_inches(size[0] / DPI, size[1] / DPI)
        fig.subplots_adjust(left=0.11, right=0.98, bottom=0.2, top=0.88, wspace=0.3)
        ax = self._loss_ax
        ax.clear()
        self._style(ax, "training loss")
        if losses:
            ax.plot(steps, losses, color="#f0a030", lw=1)
            finite = [v for v in losses if math.isfinite(v)]
            if finite and min(finite) > 0:
                ax.set_yscale("log")
        ax = self._val_ax
        ax.clear()
        self._style(ax, "validation")
        for key, series in metrics.items():
            ax.plot(val_steps, series, marker="o", ms=3, lw=1, label=key)
        if metrics:
            ax.legend(fontsize=7, labelcolor="white", facecolor=BACKGROUND, edgecolor="#888888")
        fig.canvas.draw()
        return np.array(fig.canvas.buffer_rgba(), copy=True)
