"""Inference: from an image to probabilities and labels, of any size.

- :mod:`.tiled` — overlap-tile prediction of a normalised image or volume
  (:func:`predict_tiled`, the engine :func:`iter_predict_tiled` that yields progress).
- :mod:`.passes` — the forward passes over batches of tiles: test-time augmentation, the
  out-of-memory recovery.
- :mod:`.images` — raw images and stacks: normalised as the model says, then predicted.
- :mod:`.tiling` — where the tiles go, mirror extrapolation at the border, the automatic tile.
- :mod:`.postprocess` — probabilities → instance labels (:class:`PostprocessSettings`, the one
  declaration the command line's options and the Predict widget's controls are built from).
- :mod:`.segment` — the one path from a raw image to labels that the widgets and the commands
  drive (normalisation, prediction and post-processing as stored with the model).
- :mod:`.stitch` — a 2D model's per-plane cells linked into 3D objects.
- :mod:`.blockwise` — block-wise prediction of zarr/dask arrays into a zarr group, optionally
  on a dask cluster; :mod:`.blocks` — the work of one block and the merge across blocks.
"""

from napari_unet.core.predict.blockwise import iter_predict_to_zarr, predict_to_zarr
from napari_unet.core.predict.images import (
    iter_predict_image,
    iter_predict_stack,
    predict_image,
    predict_stack,
)
from napari_unet.core.predict.postprocess import PostprocessSettings, labels_from_probabilities
from napari_unet.core.predict.segment import iter_segment, segment, stored_spacing
from napari_unet.core.predict.tiled import PredictProgress, iter_predict_tiled, predict_tiled
from napari_unet.core.predict.tiling import auto_tile_shape

__all__ = [
    "PostprocessSettings",
    "PredictProgress",
    "auto_tile_shape",
    "iter_predict_image",
    "iter_predict_stack",
    "iter_predict_tiled",
    "iter_predict_to_zarr",
    "iter_segment",
    "labels_from_probabilities",
    "predict_image",
    "predict_stack",
    "predict_tiled",
    "predict_to_zarr",
    "segment",
    "stored_spacing",
]
