"""Labels → what training learns: instances, what counts, the per-pixel target.

- :mod:`.instances` — instance ids from instance maps or binary masks.
- :mod:`.sparse` — what counts in the loss: the painted cells, a band around them, the
  annotated regions or slices, the background strokes.
- :mod:`.target` — the training target: cells, separation borders between touching cells
  (two classes) or a border class (three), or the walls of a tissue, and the mask of
  annotated pixels.
- :mod:`.tissue` — tessellated annotations (cells that fill the space) told apart from
  objects on a background.
"""

from napari_unet.core.targets.instances import as_annotated, to_instances
from napari_unet.core.targets.sparse import (
    BAND_FRACTION,
    MIN_BAND,
    band_width,
    count_slices,
    counted_area,
    describe_annotation,
    slices_mask,
)
from napari_unet.core.targets.target import make_target, separation_borders
from napari_unet.core.targets.tissue import (
    TARGETS,
    TISSUE_CONTACT,
    contact_counts,
    contact_share,
    recognise_target,
)

__all__ = [
    "BAND_FRACTION",
    "MIN_BAND",
    "TARGETS",
    "TISSUE_CONTACT",
    "as_annotated",
    "band_width",
    "contact_counts",
    "contact_share",
    "count_slices",
    "counted_area",
    "describe_annotation",
    "make_target",
    "recognise_target",
    "separation_borders",
    "slices_mask",
    "to_instances",
]
