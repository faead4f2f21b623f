"""Screenshots of each widget in use, for the README: run under a display, e.g.

    xvfb-run -a python scripts/screenshots.py [--steps 200] [--out docs/images]

Opens napari (show=True) with the real nuclei sample, docks each widget in turn, trains a small
network for a short while, predicts, and saves the whole window to <out>/<widget>.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def _wait(app, condition, timeout=600.0):
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_unet.sample_data import nuclei
    from napari_unet.widgets import dock_all

    viewer = napari.Viewer(show=True, title="napari U-Net")
    viewer.window.resize(1500, 950)
    for data, meta, kind in nuclei():
        getattr(viewer, f"add_{kind}")(data, **meta)
    app = QApplication.instance()
    widgets = dock_all(viewer)
    image = viewer.layers["nuclei (DSB2018)"]
    truth = viewer.layers["nuclei (DSB2018) labels"]

    def shot(name, dock_name):
        viewer.window.dock_widgets[dock_name].parent().raise_()
        _wait(app, lambda: False, 1.0)
        viewer.screenshot(path=str(args.out / f"{name}.png"), canvas_only=False, flash=False)
        print(args.out / f"{name}.png")

    annotate = widgets["Annotate cells"]
    annotate.image_combo.set_layer(image)
    labels = annotate.create_labels()
    labels.data[:128, :128] = truth.data[:128, :128]  # "painted": the top-left quarter
    labels.refresh()
    regions = annotate.add_regions_layer()
    regions.add_rectangles([[0, 0], [127, 127]])
    annotate.new_cell()
    shot("annotate", "Annotate cells")

    weights = widgets["Weight map"]
    weights.labels_combo.set_layer(truth)
    weights.compute()
    _wait(app, lambda: weights._worker is None and weights.weight_layer is not None)
    shot("weight_map", "Weight map")
    for name in ("weight map", "separation borders", "annotated regions"):
        viewer.layers[name].visible = False

    train = widgets["Train U-Net"]
    train.form.image_combo.set_layer(image)
    train.form.labels_combo.set_layer(truth)
    train.form.depth.setValue(3)
    train.form.steps.setValue(args.steps)
    train._preview_timer.setInterval(2000)
    train.start_training()
    _wait(app, lambda: train.trainer is not None and train.trainer.step >= args.steps * 0.8)
    _wait(app, lambda: "live prediction" in viewer.layers, 30)
    shot("train", "Train U-Net")
    _wait(app, lambda: not train.is_training())
    viewer.layers["live prediction"].visible = False

    predict = widgets["Predict"]
    predict.image_combo.set_layer(image)
    predict.compare_combo.set_layer(truth)
    predict.contours.setChecked(True)
    truth.visible = False
    predict.predict()
    _wait(app, lambda: predict.worker is None)
    shot("predict", "Predict")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
