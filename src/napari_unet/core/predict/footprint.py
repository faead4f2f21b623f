"""Memory of a whole-image prediction, estimated from the image's shape before it is read.

Segmenting an image at once (:func:`napari_unet.core.predict.segment`) holds the raw image, its
normalised float32 copy (and the temporaries of the percentiles), the class probabilities, the
labels and the post-processing's maps, besides the network's own working memory for a tile
(:func:`napari_unet.core.model.estimate_inference_bytes`). :func:`segment_bytes` adds them up;
:func:`check_segment_memory` compares the sum with what the device may use
(:func:`napari_unet.core.model.available_bytes`) so that a 20000 x 20000 image is refused, or
sent block by block (:mod:`napari_unet.core.predict.blockwise`), before anything is allocated.

The per-pixel figures are the peak resident memory of segmenting a 2048² uint16 image with a
fixed 252² tile (so that the network's part stays small), beyond the raw image: 25 bytes per
pixel for 1 channel and 2 classes, 42 for 3 classes, 36 for 3 channels, 75 with the watershed
split; the formula below lies 15-30 % above each. Averaging several scales
(:mod:`napari_unet.core.predict.scales`) segments the image resized to each: the peak is the
largest scale's, its area times the image's, plus the probabilities' running sum. Measured on a
2048² colour image with the shipped nuclei model, one pass: 630 MB beyond the raw image at its
own size, 1,239 MB at the scales 1, 0.7 and 1.4 (1.97x; 1.4² = 1.96).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["check_segment_memory", "segment_bytes"]

#: bytes per pixel of the plane being segmented, at the peak, beyond the raw image: a fixed
#: part, per input channel (the float32 copy and the percentiles' temporaries), per class
#: beyond the first (probabilities and the post-processing's maps), and the watershed split
_PER_PIXEL, _PER_CHANNEL, _PER_CLASS, _WATERSHED = 8, 8, 16, 56
#: bytes per pixel of every other plane of a stack, kept to the end (float32 probabilities
#: and int32 labels)
_KEPT_PER_CLASS, _KEPT_LABELS = 4, 4


def segment_bytes(model, shape: Sequence[int], *, itemsize: int = 2, planes: int = 1,
                  tile_bytes: int = 0, watershed: bool = False,
                  scales: Sequence[float] = (1.0,)) -> int:
    """Bytes that segmenting a raw image of spatial ``shape`` at once needs, at the peak.

    Parameters
    ----------
    model : UNet
        Its input channels and classes count.
    shape : sequence of int
        The spatial shape of one plane ((H, W), or (Z, Y, X) for a 3D model's volume).
    itemsize : int
        Bytes per raw pixel and channel (2 for uint16).
    planes : int
        Planes of a stack predicted one after the other by a 2D model.
    tile_bytes : int
        The network's working memory for one batch of tiles
        (:func:`napari_unet.core.model.estimate_inference_bytes`).
    watershed : bool
        The watershed split of touching cells is on.
    scales : sequence of float
        The scales averaged (:func:`napari_unet.core.predict.scales.iter_predict_scales`): the
        peak is that of the image resized to the largest of them, plus the probabilities'
        running sum (``tile_bytes``: the tiles at that size).

    Examples
    --------
    >>> from napari_unet.core.model import UNet
    >>> net = UNet(depth=1, base_channels=2)
    >>> round(segment_bytes(net, (20000, 20000)) / 2**30)
    13
    >>> round(segment_bytes(net, (20000, 20000), scales=(1, 0.7, 1.4)) / 2**30)
    27
    """
    pixels = math.prod(int(s) for s in shape)
    c, k = model.in_channels, model.num_classes
    raw = planes * pixels * c * itemsize
    kept = (planes - 1) * pixels * (_KEPT_PER_CLASS * k + _KEPT_LABELS)
    peak = pixels * (_PER_PIXEL + _PER_CHANNEL * c + _PER_CLASS * (k - 1)
                     + (_WATERSHED if watershed else 0))
    if tuple(float(s) for s in scales) != (1.0,):  # the largest resized copy, and the sum
        peak = peak * max(1.0, *(float(s) for s in scales)) ** 2 + pixels * 4 * k
    return int(raw + kept + peak + tile_bytes)


def check_segment_memory(model, shape: Sequence[int], *, itemsize: int = 2, planes: int = 1,
                         tile_bytes: int = 0, watershed: bool = False,
                         scales: Sequence[float] = (1.0,), device="cpu") -> tuple[int, int]:
    """``(needed, available)`` bytes for segmenting this image at once; a ``MemoryError``
    naming both when it would not fit (the caller adds the fix it can offer).

    Examples
    --------
    >>> from napari_unet.core.model import UNet
    >>> need, have = check_segment_memory(UNet(depth=1, base_channels=2), (64, 64))
    >>> need < have
    True
    """
    from napari_unet.core.model.memory import available_bytes, format_bytes

    need = segment_bytes(model, shape, itemsize=itemsize, planes=planes, tile_bytes=tile_bytes,
                         watershed=watershed, scales=scales)
    have = available_bytes(device)
    if need > 0.85 * have:
        size = " x ".join(str(int(s)) for s in shape)
        stack = f" ({planes} planes)" if planes > 1 else ""
        if tuple(float(s) for s in scales) != (1.0,):
            stack += f" at scales {', '.join(f'{float(s):g}' for s in scales)}"
        raise MemoryError(f"segmenting a {size} image{stack} at once needs about "
                          f"{format_bytes(need)}, but {device} has {format_bytes(have)} available")
    return need, have
