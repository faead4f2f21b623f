"""napari dock widgets: thin Qt/magicgui front ends over :mod:`napari_unet.core`."""
