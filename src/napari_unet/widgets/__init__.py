"""napari dock widgets: thin Qt front ends over :mod:`napari_unet.core` and
:mod:`napari_unet.engine`.

One module per dock widget (the manifest's ``python_name``): :mod:`.annotate`,
:mod:`.weight_map`, :mod:`.train`, :mod:`.predict`. Their parts: :mod:`.common` (layer
choosers, notifications, the shared model registry), :mod:`.annotation_layers` (the layers an
annotation is made of, and their files), :mod:`.volume` (3D layers and annotated slices),
:mod:`.jobs` (work off the GUI thread), :mod:`.settings_form` (controls built from a settings
dataclass), :mod:`.train_form` (the settings, generated from their declaration),
:mod:`.train_pairs` (the pairs a training learns from), :mod:`.train_view` (what a training
shows; the child itself is driven by :mod:`napari_unet.engine.client`), :mod:`.rule_line`,
:mod:`.plot`, :mod:`.live` and :mod:`.runs_panel`.

Importing this package imports no Qt; :func:`launch_demo_viewer` does, when called
(``python -m napari_unet.widgets`` runs it).
"""

from __future__ import annotations

WIDGETS = {
    "Annotate cells": ("napari_unet.widgets.annotate", "AnnotateWidget"),
    "Weight map": ("napari_unet.widgets.weight_map", "WeightMapWidget"),
    "Train U-Net": ("napari_unet.widgets.train", "TrainWidget"),
    "Predict": ("napari_unet.widgets.predict", "PredictWidget"),
}


def dock_all(viewer) -> dict:
    """Dock the four widgets (tabbed on the right) in ``viewer``; returns {display name: widget}."""
    import importlib

    out = {}
    for name, (module, cls) in WIDGETS.items():
        widget = getattr(importlib.import_module(module), cls)(viewer)
        viewer.window.add_dock_widget(widget, name=name, area="right", tabify=True)
        out[name] = widget
    return out


def launch_demo_viewer(*, sample: str = "touching_cells", show: bool = True, run: bool = True):
    """Open napari with sample data and the four widgets docked (``napari-unet demo --gui``).

    Parameters
    ----------
    sample : {"touching_cells", "nuclei"}
        The sample data set to open.
    show : bool
        Show the window.
    run : bool
        Start the Qt event loop (blocks until the window is closed).

    Returns
    -------
    (viewer, widgets dict)
    """
    import napari

    from napari_unet import sample_data

    makers = {"touching_cells": sample_data.touching_cells, "nuclei": sample_data.nuclei}
    if sample not in makers:
        raise ValueError(f"sample: expected one of {sorted(makers)}, got {sample!r}")
    viewer = napari.Viewer(title="napari U-Net demo", show=show)
    for data, meta, kind in makers[sample]():
        getattr(viewer, f"add_{kind}")(data, **meta)
    widgets = dock_all(viewer)
    if run:
        napari.run()
    return viewer, widgets
