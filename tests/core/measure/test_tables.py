"""Units in the column names, napari's features, CSV files and the summary of a folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_unet.core.measure import (
    from_features,
    measure_cells,
    summarize,
    to_features,
    with_units,
    write_csv,
)


def _table():
    labels = np.zeros((10, 10), np.int32)
    labels[1:4, 1:4], labels[6:9, 5:10] = 2, 5
    return measure_cells(labels, labels * 2, spacing=(0.5, 0.5), unit="µm")


def test_units_go_into_the_names_and_the_layer_key_is_index():
    t = _table()
    named = with_units(t)
    assert "area [µm²]" in named and "centroid_x [µm]" in named and "solidity" in named
    features = to_features(t)
    assert features.columns[0] == "index" and features["index"].tolist() == [2, 5]
    back = from_features(features)
    assert list(back.columns) == list(named.columns)


def test_csv_has_the_units_in_its_header_and_is_never_replaced_silently(tmp_path):
    path = write_csv(with_units(_table()), tmp_path / "cells.csv")
    header = path.read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("label,area [µm²],centroid_y [µm]")
    read = pd.read_csv(path)
    assert read["area [µm²]"].tolist() == [2.25, 3.75]
    with pytest.raises(FileExistsError, match=r"cells\.csv: exists"):
        write_csv(with_units(_table()), path)
    write_csv(with_units(_table()).iloc[:1], path, overwrite=True)
    assert len(pd.read_csv(path)) == 1


def test_summary_counts_cells_and_averages_their_size():
    t = _table()
    s = summarize([t, t.iloc[:0]], ["a.tif", "b.tif"])
    assert s["cells"].tolist() == [2, 0]
    assert s.loc[0, "mean_area"] == pytest.approx(3.0)
    assert np.isnan(s.loc[1, "mean_area"])
    assert list(with_units(s).columns) == ["image", "cells", "mean_area [µm²]"]
