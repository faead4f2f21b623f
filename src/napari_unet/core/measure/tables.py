"""The per-cell table as people read it: units in the column names, CSV files, napari's layer
``features`` and the summary of a folder of images.

The CSV a command writes, the one the Predict widget exports and the layer's ``features`` have
the same columns: :func:`with_units` names (``area [µm²]``), except that the layer calls the
label column ``index``, the key napari's Labels layer reads to show a cell's row when the mouse
is over it (:func:`to_features` / :func:`from_features`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["FEATURES_KEY", "from_features", "summarize", "to_features", "with_units",
           "write_csv"]

#: the column napari's Labels layer maps label values to ``features`` rows with
FEATURES_KEY = "index"


def with_units(table: pd.DataFrame, units: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A copy of ``table`` whose column names carry their units: ``area`` → ``area [µm²]``.

    ``units`` defaults to ``table.attrs["units"]`` (what
    :func:`~napari_unet.core.measure.measure_cells` sets); columns without a unit keep their
    name.

    Examples
    --------
    >>> t = pd.DataFrame({"label": [1], "area": [2.5]})
    >>> list(with_units(t, {"area": "µm²"}).columns)
    ['label', 'area [µm²]']
    """
    units = dict(table.attrs.get("units", {}) if units is None else units)
    out = table.rename(columns={c: f"{c} [{units[c]}]" for c in table.columns if c in units})
    out.attrs = {}
    return out


def to_features(table: pd.DataFrame) -> pd.DataFrame:
    """The table as a napari Labels layer's ``features``: units in the names, the label column
    called ``index`` (napari's key from label value to row).

    Examples
    --------
    >>> t = pd.DataFrame({"label": [3], "area": [9.0]}); t.attrs["units"] = {"area": "px²"}
    >>> list(to_features(t).columns)
    ['index', 'area [px²]']
    """
    out = with_units(table).rename(columns={"label": FEATURES_KEY})
    return out.reset_index(drop=True)


def from_features(features: pd.DataFrame) -> pd.DataFrame:
    """A layer's ``features`` back as the CSV's columns (``index`` → ``label``).

    Examples
    --------
    >>> list(from_features(pd.DataFrame({"index": [3], "area [px²]": [9.0]})).columns)
    ['label', 'area [px²]']
    """
    return pd.DataFrame(features).rename(columns={FEATURES_KEY: "label"})


def write_csv(table: pd.DataFrame, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a table (its column names as they are: give :func:`with_units`' names) as CSV.

    An existing file is replaced only with ``overwrite=True`` (a FileExistsError naming the
    file otherwise). Floats keep 6 significant digits. Returns the path.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "cells.csv"
    >>> _ = write_csv(pd.DataFrame({"label": [1], "area [px²]": [2.0]}), path)
    >>> path.read_text(encoding="utf-8").splitlines()
    ['label,area [px²]', '1,2']
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; earlier results are not replaced: choose "
                              "another file, or allow replacing it")
    table.to_csv(path, index=False, float_format="%.6g", encoding="utf-8")
    return path


def summarize(tables: Sequence[pd.DataFrame], names: Sequence[str]) -> pd.DataFrame:
    """One row per image of a folder: its cell count and the mean size (area, or volume) of
    its cells, in the tables' units.

    Examples
    --------
    >>> a = pd.DataFrame({"label": [1, 2], "area": [4.0, 6.0]}); a.attrs["units"] = {"area": "px²"}
    >>> s = summarize([a, a.iloc[:0]], ["a.tif", "b.tif"])
    >>> s.to_dict("list")
    {'image': ['a.tif', 'b.tif'], 'cells': [2, 0], 'mean_area': [5.0, nan]}
    >>> s.attrs["units"]
    {'mean_area': 'px²'}
    """
    rows, units = [], {}
    for table, name in zip(tables, names, strict=True):
        size = "area" if "area" in table.columns else "volume"
        mean = float(np.mean(table[size])) if len(table) else float("nan")
        rows.append({"image": name, "cells": len(table), f"mean_{size}": mean})
        if size in table.attrs.get("units", {}):
            units[f"mean_{size}"] = table.attrs["units"][size]
    out = pd.DataFrame(rows, columns=list(dict.fromkeys(k for r in rows for k in r)) or
                       ["image", "cells", "mean_area"])
    out.attrs["units"] = units
    return out
