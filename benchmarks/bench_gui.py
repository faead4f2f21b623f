"""GUI responsiveness during training: the longest gap between ticks of a 10 ms QTimer.

    xvfb-run -a python benchmarks/bench_gui.py [--steps 100]

Reference measured in the same run: the same timer with the viewer idle (no training). Target:
the longest gap during training <= 50 ms (training runs in a worker thread).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time


def longest_gap(app, seconds: float, busy) -> tuple[float, float, int]:
    """(longest gap ms, 99th percentile ms, gaps > 50 ms) of a 10 ms QTimer while ``busy()``."""
    from qtpy.QtCore import QTimer

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end and busy():
        app.processEvents()
        time.sleep(0.001)
    timer.stop()
    gaps = sorted(1000 * (b - a) for a, b in itertools.pairwise(ticks))
    if not gaps:
        return float("nan"), float("nan"), 0
    return gaps[-1], gaps[int(0.99 * (len(gaps) - 1))], sum(g > 50 for g in gaps)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--no-live", action="store_true", help="live prediction preview off")
    args = parser.parse_args()
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_unet.core.synthetic import synthetic_cells
    from napari_unet.widgets.train import TrainWidget

    viewer = napari.Viewer(show=True)
    image, labels = synthetic_cells((256, 256), seed=0)
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="truth")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train U-Net")
    widget.form.steps.setValue(args.steps)
    widget.form.minutes.setValue(0)
    widget.form.live.setChecked(not args.no_live)
    app = QApplication.instance()
    load0 = os.getloadavg()[0]
    idle = longest_gap(app, 5.0, lambda: True)
    widget.start_training()
    t0 = time.perf_counter()
    busy = longest_gap(app, 600.0, widget.is_training)
    took = time.perf_counter() - t0
    idle2 = longest_gap(app, 5.0, lambda: True)
    load1 = os.getloadavg()[0]
    cfg = widget.trainer.config
    print(f"GUI defaults except steps: depth {cfg.depth}, base {cfg.base_channels}, tile "
          f"{widget.trainer.tile}, batch {widget.trainer.batch_size}; torch threads in the "
          f"worker {widget.trainer.config.threads} of {os.cpu_count()} cores; "
          f"{widget.plot.renders} plot renders")
    print(f"load average (1 min) {load0:.1f} before, {load1:.1f} after")
    for label, (worst, p99, over) in (("idle before", idle), (
            f"during {args.steps} steps ({took:.0f} s, live preview {'off' if args.no_live else 'on'})", busy),
            ("idle after", idle2)):
        print(f"{label}: longest gap {worst:.1f} ms, 99th percentile {p99:.1f} ms, "
              f"{over} gaps > 50 ms")
    print(f"ratio longest gap training / idle before: {busy[0] / idle[0]:.2f}; target <= 50 ms")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
