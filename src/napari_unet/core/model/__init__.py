"""The network: the U-Net (2D) and the 3D U-Net, their shape arithmetic and their memory.

- :mod:`.unet` — :class:`UNet`, He's initialisation, the valid input/output sizes, the
  anisotropic pooling of a coarse z, the inflation of a 2D network into a 3D one. The file is
  self-contained (torch only): bioimage.io packages ship it as the architecture's source.
- :mod:`.memory` — what training or prediction with a network of this size needs, and the
  check that refuses settings a device cannot hold before anything is allocated.
"""

from napari_unet.core.model.memory import (
    available_bytes,
    check_memory,
    count_parameters,
    estimate_inference_bytes,
    estimate_training_bytes,
    format_bytes,
)
from napari_unet.core.model.unet import (
    UNet,
    anisotropic_pool,
    he_init_,
    inflate_to_3d,
    nearest_valid_sizes,
    pool_levels,
    valid_input_shape,
    valid_output_shape,
)

__all__ = [
    "UNet",
    "anisotropic_pool",
    "available_bytes",
    "check_memory",
    "count_parameters",
    "estimate_inference_bytes",
    "estimate_training_bytes",
    "format_bytes",
    "he_init_",
    "inflate_to_3d",
    "nearest_valid_sizes",
    "pool_levels",
    "valid_input_shape",
    "valid_output_shape",
]
