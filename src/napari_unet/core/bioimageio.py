"""Former home of the bioimage.io package: see :mod:`napari_unet.core.formats.bioimageio`."""

from napari_unet.core.formats.bioimageio import *  # noqa: F403
from napari_unet.core.formats.bioimageio import __all__  # noqa: F401
