"""Live training curves: a matplotlib canvas in Qt, redrawn at most a few times per second."""

from __future__ import annotations

import time

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure


class TrainingPlot(FigureCanvasQTAgg):
    """Training loss (left) and validation metrics (right) against the step."""

    def __init__(self, parent=None, *, min_interval: float = 0.5):
        figure = Figure(figsize=(5, 2.6), facecolor="#262930", layout="constrained")
        super().__init__(figure)
        self.setParent(parent)
        self.setMinimumHeight(180)
        self._loss_ax = figure.add_subplot(1, 2, 1)
        self._val_ax = figure.add_subplot(1, 2, 2)
        self._min_interval = min_interval
        self._last_draw = 0.0
        self.clear()

    def clear(self) -> None:
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.val_steps: list[int] = []
        self.metrics: dict[str, list[float]] = {}
        self._redraw()

    def add_loss(self, step: int, loss: float) -> None:
        self.steps.append(int(step))
        self.losses.append(float(loss))
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
        self._redraw()

    def flush(self) -> None:
        self._redraw()

    def _maybe_redraw(self) -> None:
        if time.monotonic() - self._last_draw >= self._min_interval:
            self._redraw()

    def _style(self, ax, title: str) -> None:
        ax.set_facecolor("#262930")
        ax.set_title(title, color="white", fontsize=9)
        ax.tick_params(colors="white", labelsize=7)
        for spine in ax.spines.values():
            spine.set_color("#888888")
        ax.set_xlabel("step", color="white", fontsize=8)

    def _redraw(self) -> None:
        self._last_draw = time.monotonic()
        ax = self._loss_ax
        ax.clear()
        self._style(ax, "training loss")
        if self.losses:
            ax.plot(self.steps, self.losses, color="#f0a030", lw=1)
            if min(self.losses) > 0:
                ax.set_yscale("log")
        ax = self._val_ax
        ax.clear()
        self._style(ax, "validation")
        for key, series in self.metrics.items():
            ax.plot(self.val_steps, series, marker="o", ms=3, lw=1, label=key)
        if self.metrics:
            ax.legend(fontsize=7, labelcolor="white", facecolor="#262930", edgecolor="#888888")
        self.draw_idle()
