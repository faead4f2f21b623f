"""Former home of the bioimage.io package: see :mod:`napari_unet.core.formats.bioimageio`."""

from napari_unet.core.formats.bioimageio import (
    PAPER_CITATION,
    WEIGHT_FORMATS,
    build_rdf,
    export_bioimageio,
)

__all__ = ["PAPER_CITATION", "WEIGHT_FORMATS", "build_rdf", "export_bioimageio"]
