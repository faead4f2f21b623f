"""GUI responsiveness and memory during a training from the Train widget (a child process).

    xvfb-run -a python benchmarks/bench_gui.py [--steps 100] [--no-live]

Trains through the widget (the GUI defaults except the steps, live prediction preview on) and
reports for a 10 ms QTimer on the GUI thread the longest gap and the 99th percentile during the
training, with the idle reference measured in the same run (before Start and after the end);
napari's resident memory (RSS) before Start and after the training has ended (target: within
100 MB); ``torch.cuda.memory_allocated()`` in napari on a CUDA machine (target: 0); and the
longest time the GUI thread spent in each of the widget's handlers (reading events, showing the
preview, the plot), i.e. what costs the remaining milliseconds. Targets: longest gap <= 50 ms,
99th percentile <= 20 ms on a 2-core machine.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import time


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux /proc; psutil elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss / 2**20


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


def timed(obj, name: str, costs: dict) -> None:
    """Wrap the bound method ``obj.name`` so that its longest and total ms go to ``costs``."""
    method = getattr(obj, name)

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            ms = 1000 * (time.perf_counter() - t0)
            worst, total, n = costs.get(name, (0.0, 0.0, 0))
            costs[name] = (max(worst, ms), total + ms, n + 1)

    setattr(obj, name, wrapper)


def cuda_allocated() -> str:
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return "torch not imported in napari"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return f"{torch.cuda.memory_allocated()} bytes"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--no-live", action="store_true", help="live prediction preview off")
    parser.add_argument("--plot-interval", type=float,
                        help="seconds between two plot renders (default: the widget's)")
    args = parser.parse_args()
    import tempfile

    runs = tempfile.TemporaryDirectory(prefix="bench_gui_runs_")
    os.environ.setdefault("NAPARI_UNET_RUNS", runs.name)  # the run folders go there
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
    if args.plot_interval is not None:
        widget.plot._min_interval = args.plot_interval
    costs: dict = {}
    for name in ("poll", "_show_preview", "refresh_preview", "_show_step", "_on_finished"):
        timed(widget, name, costs)
    timed(widget.plot, "_show", costs)  # the plot's pixmap (rendered in a worker thread)
    widget._poll_timer.timeout.disconnect()
    widget._poll_timer.timeout.connect(widget.poll)
    widget._preview_timer.timeout.disconnect()
    widget._preview_timer.timeout.connect(widget.refresh_preview)
    app = QApplication.instance()
    load0 = os.getloadavg()[0]
    idle = longest_gap(app, 5.0, lambda: True)
    rss0 = rss_mb()
    proc = widget.start_training()
    t0 = time.perf_counter()
    busy = longest_gap(app, 600.0, widget.is_training)
    took = time.perf_counter() - t0
    idle2 = longest_gap(app, 5.0, lambda: True)
    rss1 = rss_mb()
    load1 = os.getloadavg()[0]
    s = (proc.started or {}).get("settings", {})
    print(f"GUI defaults except steps: depth {s.get('depth')}, base {s.get('base_channels')}, "
          f"tile {s.get('tile')}, batch {s.get('batch_size')}, device {s.get('device')}; torch "
          f"threads in the child {s.get('threads')} of {os.cpu_count()} cores; "
          f"{widget.plot.renders} plot renders; end: {(widget.terminal or {}).get('kind')}")
    print(f"load average (1 min) {load0:.1f} before, {load1:.1f} after")
    for label, (worst, p99, over) in (("idle before", idle), (
            f"during {args.steps} steps ({took:.0f} s, live preview "
            f"{'off' if args.no_live else 'on'})", busy), ("idle after", idle2)):
        print(f"{label}: longest gap {worst:.1f} ms, 99th percentile {p99:.1f} ms, "
              f"{over} gaps > 50 ms")
    print(f"ratio longest gap training / idle before: {busy[0] / idle[0]:.2f}; "
          "target <= 50 ms, p99 <= 20 ms")
    print(f"napari RSS: {rss0:.0f} MB before Start, {rss1:.0f} MB after the end "
          f"({rss1 - rss0:+.0f} MB; target within 100 MB)")
    print(f"torch.cuda.memory_allocated() in napari: {cuda_allocated()} (target 0)")
    for name, (worst, total, n) in sorted(costs.items()):
        print(f"GUI thread in {name}: {n} calls, longest {worst:.1f} ms, total {total:.0f} ms")
    viewer.close()
    runs.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
