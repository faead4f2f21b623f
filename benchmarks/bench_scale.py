"""Predicting at another scale: does resizing an image before prediction help its nuclei?

For each image of a part of ``benchmarks/splits.json`` (default: validation; never choose on
test), the model predicts the image resized by each scale (linear interpolation; labels brought
back by nearest neighbour) and F1@0.5 is scored at the image's own size. Recorded per image:
colour or gray, the true and the first pass's predicted median cell area, F1 and seconds per
scale; then the mean per scale, gray and colour apart, and the best scale per image (an oracle,
the ceiling of any rule that picks a scale per image).

    python benchmarks/bench_scale.py --model src/napari_unet/models/nuclei.safetensors \\
        --scales 1 0.7 0.5 1.4 --json scale.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import dsb_split  # noqa: E402


def is_colour(path: Path) -> bool:
    """R, G and B not all equal (a gray image stored as RGB is gray)."""
    import imageio.v3 as iio

    rgb = iio.imread(path)
    return bool(rgb.ndim == 3 and not (np.array_equal(rgb[..., 0], rgb[..., 1])
                                       and np.array_equal(rgb[..., 1], rgb[..., 2])))


def median_area(labels: np.ndarray) -> float:
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    return float(np.median(areas)) if areas.size else 0.0


def at_scale(model, meta, image: np.ndarray, scale: float) -> np.ndarray:
    """Labels of ``image`` predicted after resizing it by ``scale``, at the image's size."""
    from scipy import ndimage as ndi

    from napari_unet.core.predict import segment

    if scale == 1.0:
        return segment(model, image, metadata=meta, device="cpu")[1]
    labels = segment(model, ndi.zoom(image, scale, order=1), metadata=meta, device="cpu")[1]
    back = [a / b for a, b in zip(image.shape, labels.shape, strict=True)]
    return ndi.zoom(labels, back, order=0)[:image.shape[0], :image.shape[1]]


def main() -> None:
    import tifffile

    from napari_unet.core.io import load_model
    from napari_unet.core.metrics import instance_f1

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--part", default="validation", choices=dsb_split.EVAL_SETS)
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.7, 0.5, 1.4])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    model, meta = load_model(args.model)
    rows = []
    for i in sorted(dsb_split.split()[args.part]):
        image = dsb_split.read_gray(dsb_split.image_path(i))
        truth = tifffile.imread(dsb_split.label_path(i))
        row = {"id": i, "colour": is_colour(dsb_split.image_path(i)),
               "true_median_area": median_area(truth)}
        for scale in args.scales:
            t0 = time.perf_counter()
            labels = at_scale(model, meta, image, scale)
            if scale == 1.0:
                row["predicted_median_area"] = median_area(labels)
            row[f"f1@{scale:g}"] = round(float(instance_f1(labels, truth)), 4)
            row[f"s@{scale:g}"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {}
    for kind, keep in (("all", lambda r: True), ("gray", lambda r: not r["colour"]),
                       ("colour", lambda r: r["colour"])):
        part = [r for r in rows if keep(r)]
        summary[kind] = {f"{s:g}": round(float(np.mean([r[f"f1@{s:g}"] for r in part])), 4)
                         for s in args.scales}
        summary[kind]["best per image"] = round(float(np.mean(
            [max(r[f"f1@{s:g}"] for s in args.scales) for r in part])), 4)
        print(kind, len(part), summary[kind])
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
