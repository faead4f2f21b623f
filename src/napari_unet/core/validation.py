"""Validation during training: the held-out regions, predicted tile by tile, and their metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage as ndi

from napari_unet.core.data import PreparedImage, ValidationRegion
from napari_unet.core.loss import weighted_cross_entropy
from napari_unet.core.metrics import foreground_iou, pixel_error, rand_error

__all__ = ["tile_starts", "validate"]


def tile_starts(start: int, stop: int, out: int) -> list[int]:
    """Output-window starts covering ``[start, stop)`` with windows of ``out`` (last one clamped).

    Examples
    --------
    >>> tile_starts(0, 10, 4)
    [0, 4, 6]
    >>> tile_starts(5, 7, 4)
    [5]
    """
    if stop - start <= out:
        return [start]
    starts = list(range(start, stop - out, out))
    return [*starts, stop - out]


@torch.no_grad()
def predict_region(model, prep: PreparedImage, region, *, tile: int, device, amp=False):
    """Class logits (K, h, w) of ``model`` over a region of a prepared (padded) image."""
    ys, xs = region
    h, w = ys.stop - ys.start, xs.stop - xs.start
    out = model.output_shape((tile, tile))[0]
    margin = (tile - out) // 2
    logits = np.zeros((model.num_classes, h, w), np.float32)
    p = prep.pad
    hi_y = prep.image.shape[1] - p - margin - out  # last output start whose input fits
    hi_x = prep.image.shape[2] - p - margin - out
    if min(hi_y, hi_x) < margin - p:
        raise ValueError(f"prepared: padding {p} too small for tile {tile}")
    for y in tile_starts(ys.start, ys.stop, out):
        for x in tile_starts(xs.start, xs.stop, out):
            ye, xe = max(min(y, hi_y), margin - p), max(min(x, hi_x), margin - p)
            y0, x0 = ye - margin + p, xe - margin + p
            patch = np.ascontiguousarray(prep.image[:, y0 : y0 + tile, x0 : x0 + tile])
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                res = model(torch.from_numpy(patch)[None].to(device)).float()[0].cpu().numpy()
            y1, x1 = min(y + out, ys.stop, ye + out), min(x + out, xs.stop, xe + out)
            logits[:, y - ys.start : y1 - ys.start, x - xs.start : x1 - xs.start] = res[
                :, y - ye : y1 - ye, x - xe : x1 - xe
            ]
    return logits


def validate(
    model,
    prepared: Sequence[PreparedImage],
    regions: Sequence[ValidationRegion],
    *,
    tile: int,
    device: torch.device,
    amp: bool = False,
) -> dict[str, float]:
    """Mean weighted loss, foreground IoU, pixel error and Rand error over the regions.

    Predicted cells are the 4-connected components of the "cell" class (1). Only annotated
    pixels are scored: the pixel error is the fraction of the region's *annotated* pixels that
    are wrong, and outside the annotation prediction and truth are both background (the Rand
    error only counts true foreground anyway).
    """
    was_training = model.training
    model.eval()
    rows = []
    try:
        for reg in regions:
            prep = prepared[reg.index]
            logits = predict_region(model, prep, reg.region, tile=tile, device=device, amp=amp)
            ys, xs = reg.region
            p = prep.pad
            target = prep.target[ys.start + p : ys.stop + p, xs.start + p : xs.stop + p]
            loss = float(weighted_cross_entropy(
                torch.from_numpy(logits)[None], torch.from_numpy(target.astype(np.int64))[None],
                torch.from_numpy(reg.weights)[None],
            ))
            ann = prep.annotated[reg.region]
            cls = np.argmax(logits, axis=0)
            pred = ndi.label((cls == 1) & ann)[0]
            gt = prep.labels[reg.region]
            if not ann.any():  # nothing to score (split_validation avoids this)
                continue
            rows.append((loss, foreground_iou(pred, gt), pixel_error(pred[ann], gt[ann]),
                         rand_error(pred, gt)))
    finally:
        model.train(was_training)
    if not rows:
        nan = float("nan")
        return {"loss": nan, "iou": nan, "pixel_error": nan, "rand_error": nan}
    m = np.mean(np.array(rows, dtype=np.float64), axis=0)
    return {"loss": float(m[0]), "iou": float(m[1]), "pixel_error": float(m[2]),
            "rand_error": float(m[3])}
