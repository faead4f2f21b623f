"""The live preview a ``napari-unet train --control -`` child computes on request.

A ``preview PAIR Y0 Y1 X0 X1`` control line (or the JSON object
``{"cmd": "preview", "pair": PAIR, "region": [[Y0, Y1], [X0, X1]]}``) asks the training
process to segment that region of its run-data image ``PAIR`` with the current model, at the
next step boundary (at once while paused). The labels go atomically to ``preview.npy`` in the
checkpoint folder (the run folder for ``--run``), then a ``preview`` event names the file
(docs/training-events.md). So the Train widget shows the model's progress without copying a
model or importing torch for it.

>>> parse_preview("preview 0 10 74 0 64")
(0, ((10, 74), (0, 64)))
>>> parse_preview('{"cmd": "preview", "pair": 1, "region": [[0, 32], [8, 40]]}')
(1, ((0, 32), (8, 40)))
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

PREVIEW_FILE = "preview.npy"
MIN_SIDE = 8


def parse_preview(line: str) -> tuple[int, tuple[tuple[int, int], tuple[int, int]]]:
    """``(pair, ((y0, y1), (x0, x1)))`` of a preview control line; ValueError naming the form."""
    form = ("expected 'preview PAIR Y0 Y1 X0 X1' or "
            '{"cmd": "preview", "pair": PAIR, "region": [[Y0, Y1], [X0, X1]]}')
    try:
        if line.lstrip().startswith("{"):
            obj = json.loads(line)
            pair, ((y0, y1), (x0, x1)) = obj["pair"], obj["region"]
        else:
            _, pair, y0, y1, x0, x1 = line.split()
        values = [int(v) for v in (pair, y0, y1, x0, x1)]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"preview: {form}, got {line.strip()[:80]!r} ({err})") from None
    pair, y0, y1, x0, x1 = values
    return pair, ((y0, y1), (x0, x1))


def _crop(pair, region) -> tuple[np.ndarray, int | None]:
    (y0, y1), (x0, x1) = region
    image, axis = np.asarray(pair.image), pair.channel_axis
    if axis is not None:
        image = np.moveaxis(image, axis, -1)
    h, w = image.shape[:2]
    if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w) or min(y1 - y0, x1 - x0) < MIN_SIDE:
        raise ValueError(f"preview: region {[[y0, y1], [x0, x1]]} is not inside the {h}x{w} "
                         f"image or smaller than {MIN_SIDE} pixels; choose rows 0..{h} and "
                         f"columns 0..{w}")
    return np.ascontiguousarray(image[y0:y1, x0:x1]), (None if axis is None else -1)


def write_preview(trainer, pair: int, region, out_dir=None) -> Path:
    """Segment ``region`` of the trainer's pair ``pair`` with the current model; the labels
    (int32) go atomically to ``out_dir/preview.npy``; returns that path."""
    from napari_unet.core.predict.segment import segment

    n = len(trainer.pairs)
    if not 0 <= pair < n:
        raise ValueError(f"preview: pair expected 0..{n - 1}, got {pair}")
    crop, channel_axis = _crop(trainer.pairs[pair], region)
    model, metadata = trainer.snapshot()  # a copy inside the child, between two steps
    _, labels = segment(model, crop, metadata=metadata, channel_axis=channel_axis,
                        device=trainer.device, tta=False)  # the one segmentation path, 1 pass
    labels = np.asarray(labels).astype(np.int32, copy=False)
    out_dir = Path(out_dir if out_dir is not None else tempfile.gettempdir())
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / PREVIEW_FILE
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".preview-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, labels)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
