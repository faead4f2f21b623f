"""`napari-unet predict --confidence`: every predicted cell and likely miss, least certain
first, with the same confidence as the cells' table (the Predict widget's list)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import tifffile

from napari_unet.cli import main
from napari_unet.sample_data import load_nuclei


def test_confidence_writes_the_ranked_cells_beside_each_label_image(tmp_path, error_line):
    image, _ = load_nuclei()
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", image)
    args = ["predict", "--model", "nuclei", "--input", str(tmp_path / "in"), "--output",
            str(tmp_path / "out"), "--no-tta", "--device", "cpu"]
    assert main([*args, "--confidence", "--measure"]) == 0
    ranked = pd.read_csv(tmp_path / "out" / "a_confidence.csv")
    assert list(ranked.columns) == ["rank", "kind", "label", "plane", "bbox_y0", "bbox_x0",
                                    "bbox_y1", "bbox_x1", "confidence", "reason"]
    assert ranked["rank"].tolist() == list(range(1, len(ranked) + 1))
    assert ranked["confidence"].is_monotonic_increasing
    assert ranked["confidence"].between(0, 1).all() and set(ranked["kind"]) <= {"cell", "miss"}
    labels = tifffile.imread(tmp_path / "out" / "a_labels.tif")
    cells = ranked[ranked["kind"] == "cell"].set_index("label")
    assert sorted(cells.index) == sorted(np.unique(labels[labels > 0]))
    table = pd.read_csv(tmp_path / "out" / "a_cells.csv").set_index("label")
    np.testing.assert_allclose(cells["confidence"], table.loc[cells.index, "confidence"],
                               rtol=1e-5)  # the cells' table's column: one confidence
    assert main([*args, "--confidence"]) != 0  # never replaced without --force
    assert "exists" in error_line()
