"""``napari-unet predict`` on images too large to segment at once.

Before an input file is read, its header gives the shape (:func:`header_shape`); the memory of
segmenting it at once is estimated (:func:`napari_unet.core.predict.footprint.segment_bytes`)
and, where it would not fit, the file is refused with the fix (:func:`check_whole_image`): a
TIFF is predicted block by block into a zarr store with ``--output NAME.zarr``
(:func:`open_tiff_lazily` reads it tile by tile; memory does not grow with the image).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from napari_unet.cli import CLIError

__all__ = ["check_whole_image", "header_shape", "is_tiff", "open_tiff_lazily"]

#: pixels above which reading and normalising an image takes long enough to say so first
LARGE = 50_000_000


def is_tiff(path: Path) -> bool:
    """A ``.tif`` / ``.tiff`` file name."""
    return path.suffix.lower() in (".tif", ".tiff")


def header_shape(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """``(shape, dtype)`` of an image file from its header, no pixel read; None where the
    header cannot tell (the reader then reports what is wrong).

    Examples
    --------
    >>> import tempfile, tifffile
    >>> p = Path(tempfile.mkdtemp()) / "a.tif"
    >>> tifffile.imwrite(p, np.zeros((3, 40, 50), np.uint16))
    >>> header_shape(p)
    ((3, 40, 50), dtype('uint16'))
    """
    try:
        if is_tiff(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                return tuple(int(s) for s in series.shape), np.dtype(series.dtype)
        from PIL import Image

        with Image.open(path) as im:
            bands = len(im.getbands())
            dtype = np.dtype(np.uint16 if im.mode.startswith("I;16") else
                             np.int32 if im.mode in ("I", "F") else np.uint8)
            return (im.height, im.width) + ((bands,) if bands > 1 else ()), dtype
    except Exception:  # unreadable header: read_image gives the one-line error
        return None


def _layout(shape: tuple[int, ...], model) -> tuple[tuple[int, ...], int]:
    """(spatial shape of one plane or volume, planes) for the shape a file declares."""
    shape = tuple(s for s in shape if s != 1) or (1,)
    if shape[-1] in (3, 4) and len(shape) >= 3:  # colour samples last
        shape = shape[:-1]
    nd = getattr(model, "ndim", 2)
    if len(shape) <= nd:
        return shape, 1
    return shape[-nd:], math.prod(shape[:-nd])


def check_whole_image(path: Path, model, *, tile=None, batch_size: int = 1,
                      watershed: bool = False, device=None, fix: str | None = None,
                      scales=None, metadata: dict | None = None) -> int:
    """Refuse, before reading it, an image that segmenting at once would not fit in memory;
    the error (a CLIError) names ``fix``, by default the block-wise route (TIFF) or the
    conversion (other formats). ``device`` None: the model's. ``scales`` None: those the
    model's ``metadata`` stores for the image's kind (colour when the header declares 3 or 4
    samples last). Returns the pixels the header declares (0 where it cannot tell)."""
    from napari_unet.core.model.memory import estimate_inference_bytes
    from napari_unet.core.predict.footprint import check_segment_memory
    from napari_unet.core.predict.tiling import auto_tile_shape

    found = header_shape(path)
    if found is None:
        return 0
    shape, dtype = found
    spatial, planes = _layout(shape, model)
    if scales is None:
        from napari_unet.core.predict.scales import stored_scales

        colour = len(shape) >= 3 and shape[-1] in (3, 4)
        scales = stored_scales(metadata, colour=colour) if model.ndim == 2 else (1.0,)
    pixels = math.prod(spatial) * planes
    if pixels < 2**20:  # small: nothing to estimate
        return pixels
    if device is None:
        device = next(model.parameters()).device
    largest = max(1.0, *(float(s) for s in scales))  # the tiles of the largest resized copy
    tile = tuple(tile) if tile is not None else auto_tile_shape(
        model, tuple(max(1, round(n * largest)) for n in spatial), device)
    tile_bytes = estimate_inference_bytes(
        in_channels=model.in_channels, num_classes=model.num_classes, depth=model.depth,
        base_channels=model.base_channels, tile=tile, batch_size=batch_size, ndim=model.ndim,
        padding=model.padding, pool=model.config.get("pool"))
    try:
        check_segment_memory(model, spatial, itemsize=dtype.itemsize, planes=planes,
                             tile_bytes=tile_bytes, watershed=watershed, scales=scales,
                             device=device)
    except MemoryError as err:
        if fix is None and is_tiff(path):
            fix = ("predict it block by block into a zarr store, whose memory does not grow "
                   f"with the image: napari-unet predict --input {path} --output "
                   f"{path.stem}_labels.zarr")
        elif fix is None:
            fix = ("convert it to a TIFF (e.g. tifffile.imwrite) and predict that block by "
                   "block with napari-unet predict --output NAME.zarr, or crop it")
        raise CLIError(f"{path}: {err}; {fix}") from None
    return pixels


def open_tiff_lazily(path: Path):
    """A TIFF file as a read-only zarr array that reads only the tiles (strips) a slice
    touches (:func:`tifffile.imread` with ``aszarr=True``)."""
    import tifffile
    import zarr

    try:
        return zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    except Exception as err:  # any reader failure: one line naming the file
        from napari_unet.errors import format_error

        raise CLIError(f"{path}: cannot read it as a TIFF image ({format_error(err)}); give a "
                       "TIFF image, or a zarr array") from None
