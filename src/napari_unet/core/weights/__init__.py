"""The paper's weight map w(x) = w_c(x) + w0·exp(−(d1 + d2)² / 2σ²).

- :mod:`.border` — :func:`border_weight_map` (class balance and the border term, 2D or 3D,
  anisotropic with a voxel spacing) and the class-balance weights.
- :mod:`.two_nearest` — the distances to the nearest and second-nearest cell, computed for
  every pixel at once (numba, with a scipy fallback).
"""

from napari_unet.core.weights.border import border_weight_map, class_weight_vector, class_weights

__all__ = ["border_weight_map", "class_weight_vector", "class_weights"]
