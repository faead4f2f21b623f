"""Predicting at another scale: does resizing an image before prediction help its nuclei?

For each image of a part of ``benchmarks/splits.json`` (default: validation; never choose on
test), the model predicts the image resized by each scale (linear interpolation; labels brought
back by nearest neighbour) and F1@0.5 is scored at the image's own size. Recorded per image:
colour or gray, the true and the first pass's predicted median cell area, F1 and seconds per
scale; then the mean per scale, gray and colour apart, and the best scale per image (an oracle,
the ceiling of any rule that picks a scale per image).

    python benchmarks/bench_scale.py --model src/napari_unet/models/nuclei.safetensors \\
        --scales 1 0.7 0.5 1.4 --json scale.json

``--average``: the probabilities of the scales averaged at the image's own size, then the
model's post-processing once (what ``napari-unet predict --scales`` does,
:mod:`napari_unet.core.predict.scales`): each scale is predicted once per image through the
product's path (the file read as ``napari-unet predict`` reads it, colour turned gray by the
model's rule, normalised once, the stored flips within each scale), and every combination of
the first scale with the others is scored — 1; 1 + 0.7; 1 + 1.4; 1 + 0.7 + 1.4 by default —
plus the rule the model stores (``postprocess["scales"]``: per kind of image), whose
prediction is checked bit for bit against the product's default on the first colour image.

    python benchmarks/bench_scale.py --model src/napari_unet/models/nuclei.safetensors \\
        --average --json average.json
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


def combinations(scales: list[float]) -> dict[str, tuple[float, ...]]:
    """The first scale alone, with each other one, and with all of them (named "1+0.7").

    >>> list(combinations([1.0, 0.7, 1.4]))
    ['1', '1+0.7', '1+1.4', '1+0.7+1.4']
    """
    out = [scales[:1], *([scales[0], s] for s in scales[1:]), scales]
    return {"+".join(f"{s:g}" for s in c): tuple(c) for c in out}


def averaged(model, meta, args) -> list[dict]:
    """F1 per image of each combination of scales averaged, and of the model's stored rule."""
    import tifffile

    from napari_unet.commands.files import read_image
    from napari_unet.core.metrics import instance_f1
    from napari_unet.core.predict import segment
    from napari_unet.core.predict.postprocess import PostprocessSettings
    from napari_unet.core.predict.scales import stored_scales

    settings, combos, checked, rows = PostprocessSettings.from_metadata(meta), \
        combinations(args.scales), False, []
    for i in sorted(dsb_split.split()[args.part]):
        image, axis = read_image(dsb_split.image_path(i))  # as napari-unet predict reads it
        truth = tifffile.imread(dsb_split.label_path(i))
        row = {"id": i, "colour": axis is not None, "mpixel": truth.size / 1e6}
        probs = {}
        for scale in args.scales:  # each scale once, brought back to the image's size
            t0 = time.perf_counter()
            probs[scale] = segment(model, image, metadata=meta, channel_axis=axis,
                                   scales=(scale,), device="cpu")[0]
            row[f"s@{scale:g}"] = round(time.perf_counter() - t0, 2)
        for name, scales in combos.items():
            total = probs[scales[0]]
            for s in scales[1:]:  # in the product's order: ((p1 + p2) + p3) / n
                total = total + probs[s]
            row[f"f1@{name}"] = round(float(instance_f1(settings.labels(
                (total / len(scales)).astype(np.float32)), truth)), 4)
        rule = stored_scales(meta, colour=row["colour"])
        name = next((n for n, c in combos.items() if c == rule), None)
        row["rule"] = "+".join(f"{s:g}" for s in rule)
        row["f1@rule"] = row.get(f"f1@{name}")
        row["s@rule"] = round(sum(row[f"s@{s:g}"] for s in rule), 2) if name else None
        if row["colour"] and not checked and len(rule) > 1:  # the product's own default
            default = segment(model, image, metadata=meta, channel_axis=axis, device="cpu")[0]
            total = probs[rule[0]]
            for s in rule[1:]:
                total = total + probs[s]
            row["rule_is_the_default"] = bool(np.array_equal(
                default, (total / len(rule)).astype(np.float32)))
            checked = True
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def summarize(rows: list[dict], keys: list[str]) -> dict:
    summary = {}
    for kind, keep in (("all", lambda r: True), ("gray", lambda r: not r["colour"]),
                       ("colour", lambda r: r["colour"])):
        part = [r for r in rows if keep(r)]
        summary[kind] = {k: round(float(np.mean([r[f"f1@{k}"] for r in part])), 4)
                         for k in keys if all(r.get(f"f1@{k}") is not None for r in part)}
        if "s@rule" in rows[0]:
            summary[kind]["s_per_mpixel@1"] = round(sum(r["s@1"] for r in part)
                                                    / sum(r["mpixel"] for r in part), 3)
            summary[kind]["s_per_mpixel@rule"] = round(sum(r["s@rule"] or 0 for r in part)
                                                       / sum(r["mpixel"] for r in part), 3)
        print(kind, len(part), summary[kind])
    return summary


def main() -> None:
    import tifffile

    from napari_unet.core.io import load_model
    from napari_unet.core.metrics import instance_f1

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--part", default="validation", choices=dsb_split.EVAL_SETS)
    p.add_argument("--scales", type=float, nargs="+",
                   help="default 1 0.7 0.5 1.4; with --average 1 0.7 1.4 (the first is the "
                        "one every combination holds)")
    p.add_argument("--average", action="store_true",
                   help="average the scales' probabilities before the post-processing")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.scales is None:
        args.scales = [1.0, 0.7, 1.4] if args.average else [1.0, 0.7, 0.5, 1.4]
    model, meta = load_model(args.model)
    if args.average:
        rows = averaged(model, meta, args)
        summary = summarize(rows, [*combinations(args.scales), "rule"])
        if args.json:
            args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
        return
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
