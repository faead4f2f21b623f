"""Compare a model's predictions with ground-truth labels: IoU, pixel error, Rand error, F1.

For each image: predict (overlap-tile), turn probabilities into labels, then the foreground IoU,
the pixel error, the ISBI 2012 Rand error (foreground-restricted) and the instance F1 at IoU ≥ 0.5
against the labels (binary masks become 4-connected components). Prints one line per image and
the mean, or JSON with ``--json``. ``--per-cell FILE.csv`` also writes one row per true cell of
every image: ``image``, ``true_label``, ``status`` (matched at IoU ≥ 0.5; merged: one predicted
cell covers at least half of it and of another true cell; missed), ``iou`` (with its best
predicted cell), ``pred_label`` and ``merged_with``.

A 3D model evaluates (Z, Y, X) TIFF stacks as volumes: the volume is predicted as a whole and
the metrics are those of the whole volume (instance F1@0.5 over 3D instances, 6-connected for
binary masks). ``--ndim``/``--spacing`` as in ``napari-unet predict``; the mode is printed
(on stderr with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_unet.cli import CLIError
from napari_unet.commands.options import (
    add_postprocess_arguments,
    add_scales_argument,
    add_tta_argument,
    model_file,
    postprocess_settings,
    scales_choice,
    tta_choice,
)
from napari_unet.commands.volume import add_volume_arguments, describe, read_volume, resolve_mode

_KEYS = ("iou", "pixel_error", "rand_error", "instance_f1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--model", type=Path, required=True,
      help="model file (.safetensors) or a shipped model's name (e.g. nuclei)")
    a("--images", nargs="+", required=True, help="image files or folders (TIFF/PNG)")
    a("--labels", nargs="+", required=True, help="ground-truth label files or folders")
    a("--json", action="store_true", help="print the metrics as JSON")
    add_tta_argument(parser)
    add_scales_argument(parser)
    a("--gray", action="store_true",
      help="accepted for older scripts: colour images are turned gray by the model's own rule "
           "whenever the model takes one channel")
    a("--channel-axis", type=int, help="axis of the colour channels in 3D image files")
    a("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    a("--per-cell", type=Path, metavar="CSV",
      help="also write CSV: one row per true cell of every image, matched (IoU >= 0.5), "
           "merged (one predicted cell covers it and another) or missed, with its IoU")
    a("--force", action="store_true", help="replace an existing --per-cell file")
    add_volume_arguments(parser)
    add_postprocess_arguments(parser)


def evaluate_pairs(model, meta, rows, *, tta=None, settings=None, device=None,
                   progress=None, spacing=None, per_cell: bool = False, scales=None) -> dict:
    """Metrics per image and their mean for rows from ``files.read_pairs``
    (``settings``: post-processing, ``tta``: test-time augmentation, ``scales``: the scales
    averaged, default all three the model's stored ones — the scales for a row's kind, colour
    by its ``"colour"`` even when it was read as gray); with ``per_cell`` also ``"cells"``,
    the table of every true cell (:func:`napari_unet.core.measure.match_cells`, an ``image``
    column first)."""
    import numpy as np
    import pandas as pd

    from napari_unet.core.measure import match_cells
    from napari_unet.core.metrics import evaluate_segmentation
    from napari_unet.core.predict.scales import stored_scales
    from napari_unet.core.predict.segment import segment

    per_image, cells = [], []
    for row in rows:
        row_scales = scales if scales is not None or not row.get("colour") else \
            stored_scales(meta, colour=True)
        _prob, pred = segment(model, row["image"], metadata=meta, settings=settings,
                              channel_axis=row["channel_axis"], tta=tta, device=device,
                              spacing=spacing, scales=row_scales)
        m = evaluate_segmentation(pred, row["labels"])
        per_image.append({"image": str(row["path"]), **m})
        if per_cell:
            table = match_cells(pred, row["labels"])
            table.insert(0, "image", str(row["path"]))
            cells.append(table)
        if progress is not None:
            progress()
    mean = {k: float(np.mean([r[k] for r in per_image])) for k in _KEYS}
    out = {"images": per_image, "mean": mean}
    if per_cell:
        out["cells"] = pd.concat(cells, ignore_index=True)
    return out


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from napari_unet.commands.files import read_pairs
    from napari_unet.core.device import pick_device
    from napari_unet.core.io.model_file import load_model
    from napari_unet.core.normalize import stored_colour_rule

    args.model = model_file(args.model, "--model")
    if not args.model.is_file():
        raise CLIError(f"--model: {str(args.model)!r} does not exist")
    scales = scales_choice(args)  # a bad factor fails before any work
    if args.per_cell is not None and args.per_cell.exists() and not args.force:
        raise CLIError(f"--per-cell: {str(args.per_cell)!r} exists; earlier results are not "
                       "replaced: choose another file, or add --force")
    device = pick_device(args.device)
    model, meta = load_model(args.model, device=device)
    ndim, spacing = resolve_mode(args, model, meta)
    print(f"evaluating {describe(ndim, spacing)}", file=sys.stderr if args.json else sys.stdout)
    if ndim == 3:
        rows = _volume_pairs(args, model)
    else:
        from napari_unet.commands.big_images import check_whole_image
        from napari_unet.commands.files import expand_paths

        for path in expand_paths(args.images, what="--images"):  # before any pixel is read
            check_whole_image(path, model, device=device, scales=scales, metadata=meta,
                              fix="evaluate crops of it (a few thousand pixels a side) with "
                              "their labels")
        # a one-channel model turns colour images gray by its stored rule (also mixed folders)
        gray = stored_colour_rule(meta) if model.in_channels == 1 else None
        rows = read_pairs(args.images, args.labels, gray=gray, channel_axis=args.channel_axis)
    n_ch = 1 if rows[0]["channel_axis"] is None else rows[0]["image"].shape[rows[0]["channel_axis"]]
    if n_ch != model.in_channels:
        raise CLIError(
            f"--images: the images have {n_ch} channel(s) but the model takes "
            f"{model.in_channels}; use images with {model.in_channels} channel(s) or a model "
            f"trained on {n_ch}"
        )
    with tqdm(total=len(rows), unit="image", file=sys.stderr, disable=None) as bar:
        result = evaluate_pairs(model, meta, rows, tta=tta_choice(args, meta),
                                settings=postprocess_settings(args, meta),
                                device=device, progress=lambda: bar.update(1), spacing=spacing,
                                per_cell=args.per_cell is not None, scales=scales)
    if args.per_cell is not None:
        _write_per_cell(result.pop("cells"), args.per_cell)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'image':40s} {'IoU':>7s} {'pix err':>8s} {'Rand err':>9s} {'F1@0.5':>7s}")
    for r in result["images"]:
        name = Path(r["image"]).name[-40:]
        print(f"{name:40s} {r['iou']:7.4f} {r['pixel_error']:8.4f} {r['rand_error']:9.4f} "
              f"{r['instance_f1']:7.4f}")
    m = result["mean"]
    print(f"{'mean of ' + str(len(result['images'])) + ' image(s)':40s} {m['iou']:7.4f} "
          f"{m['pixel_error']:8.4f} {m['rand_error']:9.4f} {m['instance_f1']:7.4f}")
    return 0


def _write_per_cell(cells, path: Path) -> None:
    from napari_unet.core.measure import write_csv

    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(cells, path, overwrite=True)
    counts = cells["status"].value_counts()
    print(f"per cell: {', '.join(f'{counts.get(s, 0)} {s}' for s in ('matched', 'merged', 'missed'))}"
          f" of {len(cells)} true cells -> {path}", file=sys.stderr)


def _volume_pairs(args, model) -> list[dict]:
    """Rows like ``_files.read_pairs``' for (Z, Y, X) image and label stacks."""
    import numpy as np
    import tifffile

    from napari_unet.commands.pairing import expand_paths, pair_paths

    if args.gray:
        raise CLIError("--gray: only for 2D colour images; a 3D model reads gray or channel stacks")
    images = expand_paths(args.images, what="--images")
    pairs = pair_paths(images, expand_paths(args.labels, what="--labels"))
    rows = []
    for ip, lp in pairs:
        image, axis = read_volume(ip, model, args.channel_axis)
        labels = np.squeeze(tifffile.imread(lp))
        spatial = image.shape if axis is None else np.delete(image.shape, axis % image.ndim)
        if labels.shape != tuple(spatial) or not np.issubdtype(labels.dtype, np.integer):
            raise CLIError(
                f"{lp}: expected integer labels of the image's shape {tuple(spatial)}, got "
                f"{labels.dtype} {labels.shape}"
            )
        rows.append({"image": image, "labels": labels.astype(np.int64), "channel_axis": axis,
                     "path": ip})
    return rows
