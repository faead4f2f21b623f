"""napari-cell-unet: the U-Net of Ronneberger, Fischer & Brox (2015) for napari.

The distribution is ``napari-cell-unet``; the import package ``napari_unet`` and the command
``napari-unet``. Importing this package imports neither Qt nor torch; the compute lives in
:mod:`napari_unet.core`, the widgets in :mod:`napari_unet.widgets`.
"""

__version__ = "0.1.0"

#: The distribution this package belongs to (``pip install napari-cell-unet``). Another project
#: ships an import package of the same name; :mod:`napari_unet.installation` reads this marker to
#: tell whether that project's ``__init__.py`` replaced this one.
__distribution__ = "napari-cell-unet"

__all__ = ["__distribution__", "__version__"]
