"""Per-cell measurements of a segmentation, and per-cell comparison with true labels.

- :mod:`.cells` — :func:`measure_cells`: one row per cell (size, centroid, bounding box,
  shape, intensity, border flag, the model's confidence) from scikit-image's
  ``regionprops_table``; :func:`confidence_maps` turns probabilities into the confidence
  columns' maps.
- :mod:`.tables` — units in the column names (:func:`with_units`), CSV files
  (:func:`write_csv`), napari's layer ``features`` (:func:`to_features`,
  :func:`from_features`), the summary of a folder (:func:`summarize`).
- :mod:`.confidence` — the model's confidence in each cell (:func:`add_confidence`, the
  ``confidence`` column that every table measured with probabilities carries).
- :mod:`.matching` — :func:`match_cells`: which true cells were matched, missed or merged.

One table for every entry point: the Predict widget (the layer's ``features``, *Export CSV…*,
*Predict a folder…*) and ``napari-unet predict --measure`` compute it with these functions.
"""

from napari_unet.core.measure.cells import confidence_maps, measure_cells, sphericity
from napari_unet.core.measure.confidence import CONFIDENCE, add_confidence, border_contrast
from napari_unet.core.measure.matching import match_cells
from napari_unet.core.measure.tables import (
    FEATURES_KEY,
    from_features,
    summarize,
    to_features,
    with_units,
    write_csv,
)

__all__ = [
    "CONFIDENCE",
    "FEATURES_KEY",
    "add_confidence",
    "border_contrast",
    "confidence_maps",
    "from_features",
    "match_cells",
    "measure_cells",
    "sphericity",
    "summarize",
    "to_features",
    "with_units",
    "write_csv",
]
