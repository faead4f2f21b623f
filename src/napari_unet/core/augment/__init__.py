"""Augmentation in torch, on the training device: elastic deformation on a coarse grid (the
paper's), rotation, flips, scaling, shifts and gray-value changes.

- :mod:`.config` — :class:`AugmentConfig`: what is drawn for each sample.
- :mod:`.pipeline` — :func:`augment_batch` (what training calls),
  :func:`elastic_deform` (numpy in, numpy out) and :class:`Augmenter`.
- :mod:`.resample` — bicubic upsampling of the coarse displacements and the sampling of images,
  labels and weights at the warped coordinates.
- :mod:`.intensity` — the gray-value changes.
"""

from napari_unet.core.augment.config import AugmentConfig
from napari_unet.core.augment.pipeline import (
    Augmenter,
    augment_batch,
    elastic_deform,
    random_displacement,
    warp,
)

__all__ = ["AugmentConfig", "Augmenter", "augment_batch", "elastic_deform",
           "random_displacement", "warp"]
