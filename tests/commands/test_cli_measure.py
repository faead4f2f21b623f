"""`napari-unet predict --measure` (a cells' table beside each label image, a summary) and
`napari-unet evaluate --per-cell` (matched, merged or missed true cells), on the real nuclei
sample with the shipped model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage.measure import regionprops

from napari_unet.cli import main
from napari_unet.sample_data import load_nuclei


@pytest.fixture(scope="module")
def nuclei_folder(tmp_path_factory):
    """The nuclei sample and its mirror image, as two TIFF files, and their true labels."""
    root = tmp_path_factory.mktemp("nuclei")
    image, labels = load_nuclei()
    for folder in ("in", "truth"):
        (root / folder).mkdir()
    for name, img, lab in (("a", image, labels), ("b", image[:, ::-1], labels[:, ::-1])):
        tifffile.imwrite(root / "in" / f"{name}.tif", np.ascontiguousarray(img))
        tifffile.imwrite(root / "truth" / f"{name}.tif", np.ascontiguousarray(lab))
    return root


def _predict(root, out, *flags):
    return main(["predict", "--model", "nuclei", "--input", str(root / "in"), "--output",
                 str(out), "--no-tta", "--device", "cpu", *flags])


def test_measure_writes_a_table_beside_each_label_image(nuclei_folder, tmp_path, error_line):
    out = tmp_path / "out"
    assert _predict(nuclei_folder, out, "--measure", "--pixel-size", "0.5") == 0
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == ["image", "cells", "mean_area [µm²]"]
    for name in ("a", "b"):
        labels = tifffile.imread(out / f"{name}_labels.tif")
        image = tifffile.imread(nuclei_folder / "in" / f"{name}.tif")
        table = pd.read_csv(out / f"{name}_cells.csv")
        assert list(table.columns[:4]) == ["label", "area [µm²]", "centroid_y [µm]",
                                           "centroid_x [µm]"]
        assert {"eccentricity", "solidity", "mean_intensity", "integrated_intensity",
                "touches_border", "mean_probability"} <= set(table.columns)
        regions = regionprops(labels, image)
        assert len(table) == len(regions) > 30
        assert table["label"].tolist() == [r.label for r in regions]
        np.testing.assert_allclose(table["area [µm²]"], [0.25 * r.area for r in regions])
        np.testing.assert_allclose(table["mean_intensity"], [r.intensity_mean for r in regions],
                                   rtol=1e-5)
        assert table["mean_probability"].between(0.5, 1.0).all()  # cells are above threshold
        row = summary[summary["image"] == f"{name}.tif"].iloc[0]
        assert row["cells"] == len(table)
        assert row["mean_area [µm²]"] == pytest.approx(table["area [µm²]"].mean(), rel=1e-5)
    before = (out / "a_cells.csv").read_bytes()
    assert _predict(nuclei_folder, out, "--measure") != 0
    line = error_line()
    assert "exists" in line and "--force" in line
    assert (out / "a_cells.csv").read_bytes() == before
    assert _predict(nuclei_folder, out, "--measure", "--force") == 0  # in pixels now
    assert "area [px²]" in pd.read_csv(out / "a_cells.csv").columns


def test_a_stack_gets_a_plane_column_and_one_id_per_cell(nuclei_folder, tmp_path):
    image = tifffile.imread(nuclei_folder / "in" / "a.tif")
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "stack.tif", np.stack([image[:128], image[128:]]))
    assert _predict(tmp_path, tmp_path / "out", "--measure") == 0
    labels = tifffile.imread(tmp_path / "out" / "stack_labels.tif")
    table = pd.read_csv(tmp_path / "out" / "stack_cells.csv")
    assert list(table.columns[:3]) == ["label", "plane", "area [px²]"]
    assert set(table["plane"]) == {0, 1}
    assert table["label"].is_unique  # ids go on from plane to plane
    assert len(table) == len(np.unique(labels)) - 1


def test_measure_options_are_checked(nuclei_folder, tmp_path, error_line):
    assert _predict(nuclei_folder, tmp_path / "o", "--pixel-size", "0.5") != 0
    assert "--pixel-size: sizes the --measure tables" in error_line()
    assert _predict(nuclei_folder, tmp_path / "o", "--measure", "--pixel-size", "1", "2",
                    "3") != 0
    assert "--pixel-size: expected 1 or 2" in error_line()
    assert not (tmp_path / "o").exists()  # refused before any work


def test_evaluate_per_cell_says_which_true_cells_were_found(nuclei_folder, tmp_path, capsys,
                                                           error_line):
    csv = tmp_path / "cells.csv"
    args = ["evaluate", "--model", "nuclei", "--images", str(nuclei_folder / "in"),
            "--labels", str(nuclei_folder / "truth"), "--no-tta", "--device", "cpu", "--json"]
    assert main([*args, "--per-cell", str(csv)]) == 0
    scores = json.loads(capsys.readouterr().out)["images"]
    table = pd.read_csv(csv, keep_default_na=False)
    assert list(table.columns) == ["image", "true_label", "status", "iou", "pred_label",
                                   "merged_with"]
    assert set(table["status"]) <= {"matched", "merged", "missed"}
    for row in scores:
        mine = table[table["image"] == row["image"]]
        assert len(mine) == row["n_true"]
        tp = row["instance_f1"] * (row["n_pred"] + row["n_true"]) / 2
        assert (mine["status"] == "matched").sum() == pytest.approx(tp)
        assert (mine.loc[mine["status"] == "matched", "iou"] >= 0.5).all()
    assert main([*args, "--per-cell", str(csv)]) != 0
    line = error_line()
    assert "--per-cell" in line and "exists" in line


def test_with_test_time_augmentation_the_table_has_the_flips_spread(nuclei_folder, tmp_path):
    image = tifffile.imread(nuclei_folder / "in" / "a.tif")
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "crop.tif", image[:96, :96])
    assert main(["predict", "--model", "nuclei", "--input", str(tmp_path / "in"), "--output",
                 str(tmp_path / "out"), "--tta", "--measure", "--device", "cpu"]) == 0
    table = pd.read_csv(tmp_path / "out" / "crop_cells.csv")
    assert len(table) > 3 and table["mean_flip_std"].between(0.0, 0.5).all()
    assert table["mean_flip_std"].max() > 0
