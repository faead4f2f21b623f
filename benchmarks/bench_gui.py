"""GUI responsiveness during training: the longest gap between ticks of a 10 ms QTimer.

    xvfb-run -a python benchmarks/bench_gui.py [--steps 100]

Reference measured in the same run: the same timer with the viewer idle (no training). Target:
the longest gap during training <= 50 ms (training runs in a worker thread).
"""

from __future__ import annotations

import argparse
import itertools
import time


def longest_gap(app, seconds: float, busy) -> float:
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
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    return 1000 * max(gaps) if gaps else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
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
    app = QApplication.instance()
    idle = longest_gap(app, 3.0, lambda: True)
    widget.start_training()
    t0 = time.perf_counter()
    busy = longest_gap(app, 600.0, widget.is_training)
    took = time.perf_counter() - t0
    print(f"idle: longest gap {idle:.1f} ms; during {args.steps} training steps ({took:.0f} s, "
          f"live preview on): longest gap {busy:.1f} ms; ratio {busy / idle:.2f}; target <= 50 ms")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
