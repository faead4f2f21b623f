"""Regrowth into separation gaps: what it gives back on DSB2018 nuclei.

The network is trained on the paper's target: each cell minus its separation border with a
touching neighbour. Even a *perfect* prediction of that target leaves every touching cell about a
pixel short at every contact. This script takes the target itself as the prediction (the best a
network can do), turns it into labels with regrowth off and on (``regrow`` = 0, 1, 2) and scores
them against the true labels: mean IoU of matched cells, instance F1 at IoU 0.5 and 0.75, and the
foreground IoU. It isolates the post-processing step from training noise. With ``--model FILE`` the model's
probabilities of the (gray) images are used instead.

    python benchmarks/bench_regrow.py --data ../shared/data/dsb2018 --images 30
    python benchmarks/bench_regrow.py --data ../shared/data/dsb2018 --model model.safetensors
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def _matched_iou(pred, gt):
    """Mean IoU of each true cell with its best-overlapping predicted cell (0 if none)."""
    out = []
    for i in range(1, int(gt.max()) + 1):
        cell = gt == i
        if not cell.any():
            continue
        ids, counts = np.unique(pred[cell], return_counts=True)
        j = ids[np.argmax(counts)]
        out.append(0.0 if j == 0 else (cell & (pred == j)).sum() / (cell | (pred == j)).sum())
    return float(np.mean(out)) if out else float("nan")


def main(argv=None) -> int:
    import tifffile

    from napari_unet.core.metrics import foreground_iou, instance_matching
    from napari_unet.core.predict import labels_from_probabilities
    from napari_unet.core.targets import make_target

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018"))
    p.add_argument("--images", type=int, default=30)
    p.add_argument("--crop", type=int, default=256, help="top-left crop side")
    p.add_argument("--model", type=Path, help="predict with this model instead")
    args = p.parse_args(argv)
    model = meta = None
    if args.model is not None:
        import imageio.v3 as iio

        from napari_unet.core.io import load_model
        from napari_unet.core.predict import predict_image

        model, meta = load_model(args.model, device="cpu")
    files = sorted((args.data / "labels").glob("*.tif"))[: args.images]
    rows = {r: [] for r in (0, 1, 2)}
    t0 = time.perf_counter()
    for f in files:
        gt = tifffile.imread(f)[: args.crop, : args.crop].astype(np.int32)
        if model is None:
            target, _ = make_target(gt)
            cell = (target == 1).astype(np.float32)
            prob = np.stack([1 - cell, cell])
        else:
            rgb = iio.imread(args.data / "images" / f"{f.stem}.png")[..., :3].astype(np.float32)
            gray = rgb.mean(-1)[: args.crop, : args.crop]
            prob = predict_image(model, gray, metadata=meta)
        for r in rows:
            pred = labels_from_probabilities(prob, regrow=r, min_size=1)
            m50, m75 = instance_matching(pred, gt, threshold=0.5), instance_matching(
                pred, gt, threshold=0.75)
            rows[r].append((_matched_iou(pred, gt), m50["f1"], m75["f1"], foreground_iou(pred, gt)))
    what = "perfect separation-border" if model is None else f"{args.model.name}'s"
    print(f"{len(files)} DSB2018 label images ({args.crop}px crops), {what} "
          f"prediction; {time.perf_counter() - t0:.1f} s; load {os.getloadavg()[0]:.1f}")
    print(f"{'regrow':>6s} {'cell IoU':>9s} {'F1@0.5':>7s} {'F1@0.75':>8s} {'fg IoU':>7s}")
    for r, vals in rows.items():
        m = np.nanmean(np.array(vals), axis=0)
        print(f"{r:6d} {m[0]:9.4f} {m[1]:7.4f} {m[2]:8.4f} {m[3]:7.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
