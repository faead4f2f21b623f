"""The network: the U-Net (2D) and the 3D U-Net, their shape arithmetic and their memory.

- :mod:`.unet` — :class:`UNet` (2D and 3D) and He's initialisation.
- :mod:`.shapes` — the valid input and output sizes, the pooling factors per level and the
  anisotropic pooling of a coarse z. With :mod:`.unet` the architecture's source in
  bioimage.io packages (torch and the standard library only).
- :mod:`.inflate` — a 3D U-Net started from a trained 2D one.
- :mod:`.memory` — what training or prediction with a network of this size needs, and the
  check that refuses settings a device cannot hold before anything is allocated.
"""

from napari_unet.core.model.inflate import inflate_to_3d
from napari_unet.core.model.memory import (
    available_bytes,
    check_memory,
    count_parameters,
    estimate_inference_bytes,
    estimate_training_bytes,
    format_bytes,
)
from napari_unet.core.model.shapes import (
    anisotropic_pool,
    nearest_valid_sizes,
    pool_levels,
    valid_input_shape,
    valid_output_shape,
)
from napari_unet.core.model.unet import UNet, he_init_

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
