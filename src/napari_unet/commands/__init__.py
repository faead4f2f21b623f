"""Sub-commands of the ``napari-unet`` command line, one module each (see :mod:`napari_unet.cli`):
:mod:`.demo`, :mod:`.train`, :mod:`.predict`, :mod:`.evaluate`, :mod:`.export`; with
:mod:`.files` (reading and writing image files), :mod:`.options` (options shared by the
sub-commands), :mod:`.volume` (2D or 3D prediction of a stack) and :mod:`.run_folder`
(``train --run``). Training runs through :mod:`napari_unet.engine`. Never imports the widgets
or Qt (``demo --gui`` starts napari in a process of its own).
"""
