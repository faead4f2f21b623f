"""Sub-commands of the ``napari-unet`` command line, one module each (see :mod:`napari_unet.cli`):
:mod:`.demo`, :mod:`.train`, :mod:`.predict`, :mod:`.evaluate`, :mod:`.export`; with
:mod:`.files` (reading and writing image files), :mod:`.pairing` (which files go together),
:mod:`.options` (options built from the settings' declarations, and shared ones),
:mod:`.volume` (2D or 3D prediction of a stack) and :mod:`.train_data` (what ``train`` reads
and checks before it trains). Training runs through :mod:`napari_unet.engine`. Never imports the widgets
or Qt (``demo --gui`` starts napari in a process of its own).
"""
