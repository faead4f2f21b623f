"""napari-unet: the U-Net of Ronneberger, Fischer & Brox (2015) for napari.

Importing this package imports neither Qt nor torch; the compute lives in
:mod:`napari_unet.core`, the widgets in :mod:`napari_unet.widgets`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
