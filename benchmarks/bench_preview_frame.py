"""GUI-thread cost of showing a new live preview: 32-bit labels against the widget's 16-bit.

    xvfb-run -a python benchmarks/bench_preview_frame.py [--frames 14] [--side 512]

A napari viewer (shown) with a 520×696 image and a ``--side``² labels layer; each frame writes
new labels into the layer in place, refreshes it as the Train widget's live preview does
(``layer.refresh(extent=False, thumbnail=False, highlight=False)``) and forces the canvas to
paint. Reported: the median and the longest frame (the first two left out) for int32 labels
(the child's dtype, the reference), for the widget's :func:`napari_unet.widgets.live.display_dtype`
(uint16) and for a repaint with nothing new, and the ratio int32 / widget, in the same run.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=14)
    parser.add_argument("--side", type=int, default=512)
    args = parser.parse_args(argv)
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_unet.core.synthetic import synthetic_cells
    from napari_unet.widgets.live import display_dtype

    viewer = napari.Viewer(show=True)
    viewer.add_image(synthetic_cells((520, 696), seed=0)[0])
    app = QApplication.instance()
    canvas = viewer.window._qt_viewer.canvas._scene_canvas.native

    def settle(n=20):
        for _ in range(n):
            app.processEvents()
            time.sleep(0.01)

    settle(50)
    previews = [synthetic_cells((args.side, args.side), seed=s)[1].astype(np.int32)
                for s in range(6)]

    def frames(update) -> tuple[float, float]:
        ms = []
        for i in range(args.frames):
            t0 = time.perf_counter()
            update(previews[i % len(previews)])
            canvas.repaint()
            app.processEvents()
            ms.append(1000 * (time.perf_counter() - t0))
            settle(5)
        return float(np.median(ms[2:])), max(ms[2:])

    results = {}
    for name, convert in (("int32 (reference)", lambda a: a), ("widget (uint16)", display_dtype)):
        layer = viewer.add_labels(convert(np.zeros((args.side, args.side), np.int32)),
                                  opacity=0.4, name=name)
        settle()

        def write(new, layer=layer, convert=convert):
            layer.data[...] = convert(new)
            layer.refresh(extent=False, thumbnail=False, highlight=False)

        results[name] = frames(write)
        viewer.layers.remove(layer)
        settle()
    results["repaint, nothing new"] = frames(lambda new: None)
    print(f"load average {os.getloadavg()[0]:.2f}; {args.side}² preview, {args.frames} frames")
    for name, (median, worst) in results.items():
        print(f"{name}: median {median:.1f} ms, longest {worst:.1f} ms")
    ref, ours = results["int32 (reference)"][0], results["widget (uint16)"][0]
    print(f"int32 / widget (medians): {ref / ours:.2f}x")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
