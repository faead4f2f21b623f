"""Reviewing a prediction cell by cell: which cells to check first, and the one-click edits.

- :mod:`.suggest` — :func:`likely_misses` (blobs of probability without a cell) and
  :func:`suggestions`: the least certain cells and the likely misses, ranked, from the cells'
  table's ``confidence`` (:mod:`napari_unet.core.measure.confidence`).
- :mod:`.edits` — :func:`accept`, :func:`reject`, :func:`merge`, :func:`split`: new
  annotation and background arrays from a predicted cell, never the prediction itself. What
  they write counts in training by the sparse rule (:mod:`napari_unet.core.targets.sparse`):
  accepted and corrected cells with their band, and the explicit background.

The Predict widget's *Check these next* list and cell actions and ``napari-unet predict
--confidence`` use these functions.
"""

from napari_unet.core.review.edits import accept, cell_mask, merge, reject, split
from napari_unet.core.review.suggest import likely_misses, review_table, suggestions

__all__ = ["accept", "cell_mask", "likely_misses", "merge", "reject", "review_table", "split",
           "suggestions"]
