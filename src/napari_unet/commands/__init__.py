"""Sub-commands of the ``napari-unet`` command line, one module each (see :mod:`napari_unet.cli`)."""
