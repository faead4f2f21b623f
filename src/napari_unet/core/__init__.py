"""Pure compute: numpy, scipy and torch only. Never imports Qt, magicgui or napari.

Submodules are imported on demand (``from napari_unet.core.model import UNet``)
so that importing :mod:`napari_unet.core` stays cheap.
"""
