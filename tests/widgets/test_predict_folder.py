"""*Predict a folder…*: the Predict widget's model on every image of a folder, in a worker,
writing what `napari-unet predict --measure` writes, and never replacing without asking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from napari_unet.cli import main
from napari_unet.core.io import save_model
from napari_unet.core.model import UNet
from napari_unet.core.synthetic import synthetic_cells
from napari_unet.widgets.predict import PredictWidget

pytestmark = pytest.mark.gui


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(3):
        image, _ = synthetic_cells((48, 56), radius=6, seed=i)
        tifffile.imwrite(tmp_path / "in" / f"cells{i}.tif", (image * 200).astype(np.uint8))
    torch.manual_seed(0)
    model = save_model(UNet(depth=1, base_channels=4), tmp_path / "m.safetensors",
                       postprocess={"threshold": 0.45, "min_size": 2})
    return tmp_path, model


def _panel(viewer, model):
    widget = PredictWidget(viewer)
    widget.models.load_model(model)
    widget.tta.setChecked(False)
    return widget, widget.open_folder_panel()


def test_a_folder_gives_the_command_lines_files_and_a_summary(make_napari_viewer, qtbot, folder):
    root, model = folder
    _widget, panel = _panel(make_napari_viewer(), model)
    assert panel.start(root / "in", root / "gui") is not None
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60000)
    assert main(["predict", "--model", str(model), "--input", str(root / "in"), "--output",
                 str(root / "cli"), "--measure", "--no-tta", "--device", "cpu"]) == 0
    names = sorted(p.name for p in (root / "gui").iterdir())
    assert names == sorted(p.name for p in (root / "cli").iterdir())
    assert names == [f"cells{i}{s}" for i in range(3) for s in ("_cells.csv", "_labels.tif")] \
        + ["summary.csv"]
    for name in names:
        if name.endswith(".tif"):
            np.testing.assert_array_equal(tifffile.imread(root / "gui" / name),
                                          tifffile.imread(root / "cli" / name))
        else:
            pd.testing.assert_frame_equal(pd.read_csv(root / "gui" / name),
                                          pd.read_csv(root / "cli" / name))
    summary = pd.read_csv(root / "gui" / "summary.csv")
    assert panel.table.rowCount() == 3
    assert [panel.table.item(r, 1).text() for r in range(3)] == [str(n) for n in
                                                                  summary["cells"]]
    assert "summary.csv written" in panel.status.text() and panel.summary is not None


def test_existing_results_are_replaced_only_when_the_user_says_so(make_napari_viewer, qtbot,
                                                                  folder):
    root, model = folder
    _widget, panel = _panel(make_napari_viewer(), model)
    panel.start(root / "in", root / "out")
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60000)
    files = sorted((root / "out").iterdir())
    for f in files:
        f.write_bytes(b"the user's")
    asked = []
    panel.ask_replace = lambda existing: asked.append(len(existing)) or False
    assert panel.start(root / "in", root / "out") is None
    assert asked == [len(files)] and all(f.read_bytes() == b"the user's" for f in files)
    panel.ask_replace = lambda existing: True
    assert panel.start(root / "in", root / "out") is not None
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60000)
    assert all(f.read_bytes() != b"the user's" for f in files)


def test_the_input_folder_is_refused_and_cancel_stops(make_napari_viewer, qtbot, folder,
                                                      monkeypatch):
    from napari_unet.widgets import common

    seen = []
    monkeypatch.setattr(common, "show_error", seen.append)
    root, model = folder
    _widget, panel = _panel(make_napari_viewer(), model)
    panel.input_edit.setText(str(root / "in"))
    panel.output_edit.setText(str(root / "in"))
    panel._on_start()
    assert seen and seen[0].startswith("results to:") and "is the input folder" in seen[0]
    worker = panel.start(root / "in", root / "out")
    panel.cancel()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60000)
    assert worker is not None and "cancelled" in panel.status.text()
    assert len(list((root / "out").glob("*_labels.tif"))) < 3
