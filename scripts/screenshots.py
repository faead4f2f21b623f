"""Screenshots of each widget in use, for the README: run under a display, e.g.

    xvfb-run -a python scripts/screenshots.py [--steps 200] [--out docs/images]

Opens napari (show=True) with the real nuclei sample, docks each widget in turn and does what a
user does: paints the 8 nuclei nearest the centre and a background stroke, looks at the weight map
(the not-counted area veiled), trains (a child process, live curves and preview), predicts and
compares with all true nuclei, then uses the prediction as an annotation and continues training.
Saves the whole window to <out>/{annotate,weight_map,train,predict,loop}.png.

``--only cells`` (or ``all``) adds <out>/cells_table.png: the shipped ``nuclei`` model on the
nuclei sample, the prediction layer's cells' table in napari's features table widget and the
row of the cell under the mouse in the status bar.

``--only review`` (or ``all``) adds <out>/review.png: the shipped ``nuclei`` model on the nuclei
sample, *Check these next* (the least certain cells ranked and marked), the view on the first
one, and two cells accepted with one click each into the annotation layer.

``--only 3d`` (or the default ``--only all``) adds <out>/3d.png: a volume with 3 painted and
marked xy-slices, a 3D U-Net trained on them in the Train widget (``--steps-3d``) or loaded
(``--model-3d``), and Predict's 3D Labels layer of a held-out volume in napari's 3D view.
``--volume gonuclear``: the real nuclei crops GoNuclear 1135 (train) / 1136 (held out) of
../shared/data/volumes3d, best with a model of ``bench_3d.py --save DIR``
(DIR/bench_3d_s.safetensors); ``--volume synthetic`` (default): two synthetic volumes of touching
cells, small enough to train in the widget in a few minutes on a CPU.

``--only tissue`` adds <out>/tissue.png: a plant tissue (the ovule cells of
../shared/data/volumes3d, a cell-wall stain) with every cell painted on the 3 xy-planes of
``bench_tissue.py`` and marked, the tissue model ``--model-tissue`` (``bench_tissue.py --keep
DIR`` keeps DIR/tissue.safetensors) and Predict's labels filling the space, on a plane between
the annotated ones, compared with all true cells.
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
    parser.add_argument("--only", default="all",
                        choices=("all", "2d", "3d", "cells", "review", "tissue"))
    parser.add_argument("--steps-3d", type=int, default=150)
    parser.add_argument("--model-3d", type=Path, help="a 3D model file instead of training")
    parser.add_argument("--volume", default="synthetic", choices=("synthetic", "gonuclear"))
    parser.add_argument("--model-tissue", type=Path,
                        help="--only tissue: the tissue model (bench_tissue.py --keep DIR: "
                             "DIR/tissue.safetensors)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only == "tissue":
        if args.model_tissue is None:
            parser.error("--only tissue: give --model-tissue FILE (a model trained on the "
                         "ovule cells, e.g. by benchmarks/bench_tissue.py --keep DIR)")
        tissue_shot(args)
        return 0
    if args.only in ("all", "3d"):
        volume_shot(args)
    if args.only in ("all", "cells"):
        cells_shot(args)
    if args.only in ("all", "review"):
        review_shot(args)
    if args.only in ("3d", "cells", "review"):
        return 0

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
        widget = widgets.get(dock_name)
        dock = widget.parent() if widget is not None else None
        while dock is not None and not hasattr(dock, "setFloating"):  # the QDockWidget
            dock = dock.parent()
        if dock is not None:
            dock.show()
            dock.raise_()
        _wait(app, lambda: False, 1.0)
        viewer.screenshot(path=str(args.out / f"{name}.png"), canvas_only=False, flash=False)
        print(args.out / f"{name}.png")

    import numpy as np
    from scipy import ndimage as ndi

    # 1. the few-cells workflow: paint the 8 nuclei nearest the centre (no regions drawn)
    truth.visible = False  # the true labels are only for the comparison at the end
    annotate = widgets["Annotate cells"]
    annotate.image_combo.set_layer(image)
    labels = annotate.create_labels()
    ids = np.unique(truth.data)[1:]
    centres = ndi.center_of_mass(np.ones_like(truth.data), truth.data, ids)
    mid = np.array(truth.data.shape) / 2
    nearest = ids[np.argsort([np.hypot(*(np.array(c) - mid)) for c in centres])[:8]]
    painted = np.where(np.isin(truth.data, nearest), truth.data, 0)
    labels.data = painted
    background = annotate.background_brush()  # an explicit background stroke
    bg = np.zeros(truth.data.shape, np.uint8)
    bg[5:15, 5:60] = 1
    background.data = bg
    annotate.new_cell()
    _wait(app, lambda: False, 2.0)  # the Weight map widget follows the painting: hide its layers
    for layer in list(viewer.layers):
        if layer.name in ("weight map", "separation borders", "not counted (weight 0)"):
            layer.visible = False
    shot("annotate", "Annotate cells")
    for layer in list(viewer.layers):
        if layer.name in ("weight map", "separation borders", "not counted (weight 0)"):
            layer.visible = True

    weights = widgets["Weight map"]
    weights.labels_combo.set_layer(labels)
    weights.compute()
    _wait(app, lambda: weights._worker is None and weights.weight_layer is not None)
    shot("weight_map", "Weight map")
    for layer in list(viewer.layers):
        if layer.name in ("weight map", "separation borders", "not counted (weight 0)"):
            layer.visible = False

    # 2. train on the 8 painted cells in a child process, live curves and preview
    train = widgets["Train U-Net"]
    train.form.data.image_combo.set_layer(image)
    train.form.data.labels_combo.set_layer(labels)
    train.form.controls["steps"].setValue(args.steps)
    train.update_rule()
    train.start_training()
    _wait(app, lambda: train.view.progress.value() >= 0.8 * train.view.progress.maximum() > 0
          and train.view.previews_shown > 0)
    shot("train", "Train U-Net")
    _wait(app, lambda: not train.is_training())
    if "live prediction" in viewer.layers:
        viewer.layers["live prediction"].visible = False

    # 3. predict, compare with all true nuclei
    predict = widgets["Predict"]
    predict.image_combo.set_layer(image)
    predict.compare_combo.set_layer(truth)
    predict.contours.setChecked(True)
    labels.visible = False
    background.visible = False
    predict.predict()
    _wait(app, lambda: predict.worker is None)
    shot("predict", "Predict")

    # 4. correct and retrain: the prediction becomes an annotation (a copy), is corrected,
    #    and Continue training fine-tunes the current model on all pairs so far
    corrected = predict.use_as_annotation()
    for name in ("comparison (matched/missed/extra)",):
        if name in viewer.layers:
            viewer.layers[name].visible = False
    corrected.visible = True
    train.form.data.labels_combo.set_layer(corrected)
    train.form.controls["steps"].setValue(max(args.steps // 2, 1))
    train.continue_training()
    _wait(app, lambda: not train.is_training())
    viewer.window.dock_widgets["Train U-Net"].parent().raise_()
    shot("loop", "Train U-Net")
    viewer.close()
    return 0


def _raise_dock(widget):
    """Show and raise the dock widget that holds ``widget`` (tabbed docks hide the others);
    returns it, or None."""
    dock = widget.parent()
    while dock is not None and not hasattr(dock, "setFloating"):
        dock = dock.parent()
    if dock is not None:
        dock.show()
        dock.raise_()
    return dock


def _predicted_sample(title: str):
    """A shown viewer with the nuclei sample predicted by the shipped model in the Predict
    widget (contours on, the true labels hidden): ``(viewer, app, image layer, widget)``."""
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_unet.sample_data import nuclei
    from napari_unet.widgets.model_choice import SHIPPED
    from napari_unet.widgets.predict import PredictWidget

    viewer = napari.Viewer(show=True, title=title)
    viewer.window.resize(1600, 1050)
    app = QApplication.instance()
    for data, meta, kind in nuclei():
        getattr(viewer, f"add_{kind}")(data, **meta)
    image = viewer.layers["nuclei (DSB2018)"]
    viewer.layers["nuclei (DSB2018) labels"].visible = False
    predict = PredictWidget(viewer)
    viewer.window.add_dock_widget(predict, name="Predict", area="right")
    predict.models.source.setCurrentText("nuclei" + SHIPPED)
    predict.image_combo.set_layer(image)
    predict.contours.setChecked(True)
    predict.predict()
    _wait(app, lambda: predict.worker is None)
    return viewer, app, image, predict


def cells_shot(args) -> None:
    """<out>/cells_table.png: a prediction's per-cell table in napari's features table widget."""
    import numpy as np
    from qtpy.QtCore import Qt

    viewer, app, image, _predict = _predicted_sample("napari U-Net: the cells' table")
    layer = viewer.layers[f"{image.name} prediction"]
    viewer.layers.selection.active = layer
    dock, _table = viewer.window.add_plugin_dock_widget("napari", "Features table widget")
    window = dock.parent()  # the main window: the table goes below the canvas, full width
    window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
    dock.setMinimumHeight(330)
    viewer.reset_view()
    row = layer.features.iloc[len(layer.features) // 2]  # the mouse over a nucleus
    viewer.cursor.position = (row["centroid_y [px]"], row["centroid_x [px]"])
    viewer.status = layer.get_status(np.asarray(viewer.cursor.position), world=True)
    _wait(app, lambda: False, 2.0)
    viewer.screenshot(path=str(args.out / "cells_table.png"), canvas_only=False, flash=False)
    print(args.out / "cells_table.png")
    viewer.close()


def review_shot(args) -> None:
    """<out>/review.png: Check these next and the one-click cell actions."""
    import numpy as np

    viewer, app, _image, predict = _predicted_sample("napari U-Net: check these next")
    review = predict.review
    pred = predict.labels_layer
    review.actions.buttons["accept"].setChecked(True)
    cells = review.review[review.review["kind"] == "cell"]
    for label in cells["label"].iloc[1:3]:  # two listed cells accepted with one click each
        yx = np.argwhere(np.asarray(pred.data) == int(label)).mean(0)
        review.actions.click(tuple(pred.data_to_world(yx)))
    review.next()  # the view on the least certain cell
    viewer.scene.camera.zoom = viewer.scene.camera.zoom / 2  # its neighbours in view too
    _wait(app, lambda: False, 2.0)
    viewer.screenshot(path=str(args.out / "review.png"), canvas_only=False, flash=False)
    print(args.out / "review.png")
    viewer.close()


def _shared_volumes() -> Path:
    """../shared/data/volumes3d beside the repository, or beside its worktrees' folder."""
    root = Path(__file__).resolve().parents[1]
    return next((d / "shared" / "data" / "volumes3d" for d in root.parents[:2]
                 if (d / "shared" / "data" / "volumes3d").is_dir()),
                root.parent / "shared" / "data" / "volumes3d")


def _volumes(kind: str):
    """(train image, train labels, test image, test labels, spacing, names): GoNuclear 1135 /
    1136 of the shared data, or two synthetic volumes."""
    root = _shared_volumes()
    if kind == "gonuclear":
        import tifffile

        pair = [tifffile.imread(root / kind / f"gonuclear_ovule_nuclei_{n}.tif")
                for n in (1135, 1136) for kind in ("images", "labels")]
        return (*pair, (0.28 / 0.127, 1.0, 1.0), ("nuclei 1135", "nuclei 1136 (held out)"))
    from napari_unet.core.synthetic import synthetic_cells_3d

    spacing = (2.0, 1.0, 1.0)
    a = synthetic_cells_3d((24, 64, 64), radius=8, spacing=spacing, seed=0)
    b = synthetic_cells_3d((24, 64, 64), radius=8, spacing=spacing, seed=1)
    return (*a, *b, spacing, ("cells", "cells (held out)"))


def volume_shot(args) -> None:
    """<out>/3d.png: 3 annotated slices -> a 3D U-Net -> a 3D Labels layer, in the 3D view."""
    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari_unet.widgets import dock_all

    image, truth, test, test_truth, spacing, names = _volumes(args.volume)
    viewer = napari.Viewer(show=True, title="napari U-Net: volumes")
    viewer.window.resize(1500, 950)
    app = QApplication.instance()
    widgets = dock_all(viewer)
    vol = viewer.add_image(image, name=names[0], scale=spacing)
    annotate = widgets["Annotate cells"]
    annotate.image_combo.set_layer(vol)
    labels = annotate.create_labels()
    zs = np.flatnonzero(truth.reshape(truth.shape[0], -1).any(1))
    planes = [int(z) for z in np.rint(np.linspace(zs.min(), zs.max(), 5))[1:-1]]
    painted = np.zeros_like(labels.data)
    for z in planes:  # the user paints every nucleus of 3 planes and marks each
        painted[z] = truth[z]
        viewer.dims.set_current_step(0, z)
        labels.data = painted
        annotate.mark_slice()
    train, predict = widgets["Train U-Net"], widgets["Predict"]
    if args.model_3d:
        predict.models.load_model(args.model_3d)
    else:
        train.form.data.image_combo.set_layer(vol)
        train.form.data.labels_combo.set_layer(labels)
        if args.volume == "synthetic":  # a small network: minutes on a CPU
            train.form.controls["depth"].setValue(2)
        train.form.controls["steps"].setValue(args.steps_3d)
        train.form.controls["time_limit"].setValue(0)
        train.update_rule()
        train.start_training()
        _wait(app, lambda: not train.is_training(), 3600)
    held_out = viewer.add_image(test, name=names[1], scale=spacing)
    true_layer = viewer.add_labels(test_truth, name=f"{names[1]} true", scale=spacing,
                                   visible=False)
    for layer in (vol, labels, viewer.layers[f"{vol.name} annotated slices"]):
        layer.visible = False
    for layer in list(viewer.layers):  # the Weight map widget's planes, made while painting
        if layer.name in ("weight map", "separation borders", "walls",
                          "not counted (weight 0)"):
            layer.visible = False
    predict.image_combo.set_layer(held_out)
    predict.compare_combo.set_layer(true_layer)  # F1@0.5 of the 3D objects in the widget
    predict.predict()
    _wait(app, lambda: predict.worker is None, 1800)
    if "comparison (matched/missed/extra)" in viewer.layers:
        viewer.layers["comparison (matched/missed/extra)"].visible = False
    held_out.rendering, held_out.opacity = "mip", 0.5
    viewer.dims.ndisplay = 3
    viewer.camera.angles = (10, -30, 60)
    _raise_dock(predict)
    _wait(app, lambda: False, 2.0)
    viewer.screenshot(path=str(args.out / "3d.png"), canvas_only=False, flash=False)
    print(args.out / "3d.png")
    viewer.close()


def tissue_shot(args) -> None:
    """<out>/tissue.png: a tissue painted on 3 planes, segmented by a tissue model, in 2D on a
    plane between the annotated ones (the comparison with all true cells in the widget)."""
    import napari
    import numpy as np
    import tifffile
    from qtpy.QtWidgets import QApplication

    from napari_unet.widgets import dock_all

    root = _shared_volumes()
    image = tifffile.imread(root / "images" / "plantseg_ovule_cells.tif")
    truth = tifffile.imread(root / "labels" / "plantseg_ovule_cells.tif").astype(np.int32)
    viewer = napari.Viewer(show=True, title="napari U-Net: tissue")
    viewer.window.resize(1600, 1150)
    app = QApplication.instance()
    widgets = dock_all(viewer)
    vol = viewer.add_image(image, name="ovule cells")
    annotate = widgets["Annotate cells"]
    annotate.image_combo.set_layer(vol)
    labels = annotate.create_labels()
    painted = np.zeros_like(labels.data)
    for z in (5, 16, 27):  # bench_tissue.py's planes: every cell of each, marked
        painted[z] = truth[z]
        viewer.dims.set_current_step(0, z)
        labels.data = painted
        annotate.mark_slice()
    predict = widgets["Predict"]
    predict.models.load_model(args.model_tissue)
    true_layer = viewer.add_labels(truth, name="ovule cells true", visible=False)
    viewer.dims.set_current_step(0, 11)  # between the annotated planes 5 and 16
    _wait(app, lambda: False, 2.0)
    _wait(app, lambda: widgets["Weight map"]._worker is None, 60)
    predict.image_combo.set_layer(vol)
    predict.compare_combo.set_layer(true_layer)  # F1@0.5 of the 3D cells in the widget
    predict.contours.setChecked(True)
    predict.predict()
    _wait(app, lambda: predict.worker is None, 1800)
    for layer in list(viewer.layers):  # the annotation, the Weight map's, the comparison
        if layer is labels or layer.name in (
                f"{vol.name} annotated slices", "weight map", "separation borders", "walls",
                "not counted (weight 0)", "comparison (matched/missed/extra)",
                "check these next"):
            layer.visible = False
    dock = _raise_dock(predict)
    if dock is not None:
        from qtpy.QtCore import Qt

        viewer.window._qt_window.resizeDocks([dock], [560], Qt.Orientation.Horizontal)
    _wait(app, lambda: False, 1.0)
    viewer.reset_view()
    _wait(app, lambda: False, 2.0)
    viewer.screenshot(path=str(args.out / "tissue.png"), canvas_only=False, flash=False)
    print(args.out / "tissue.png")
    viewer.close()


if __name__ == "__main__":
    raise SystemExit(main())
