"""A few painted cells are enough: instance F1 of 8 painted cells on DSB2018 nuclei images.

For each image: paint the 8 true nuclei nearest the image centre (no regions), train with the
GUI's default recipe (``core.training.gui_defaults("cpu")``) on the CPU for the GUI's default
budget, predict the whole image through the Predict widget's path (``widgets.jobs.
iter_prediction``: the model's normalisation, overlap-tile prediction, labels with the
post-processing stored in the model at the end of training)
and score instance F1@0.5 against *all* true nuclei. The same run with a correctly drawn region
(the bounding box of the 8 cells, every true nucleus inside it labelled) is the reference.

Training goes through the GUI's core path: ``TrainingPair(image, labels, annotated=...,
sparse=True)`` + ``Trainer`` with the same torch thread count as the GUI (all cores but one).

    python benchmarks/bench_fewcells.py                       # the figure (quiet machine)
    python benchmarks/bench_fewcells.py --images 2 --steps 300 --modes band   # a quick check
    python benchmarks/bench_fewcells.py --json fewcells.json

``--steps``/``--time-limit`` override the GUI budget (use a step budget on a loaded machine:
the time budget then buys fewer steps than on a quiet one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "dsb2018"

#: 520x696 fluorescence images with 67-199 nuclei, and two smaller ones with 50+ nuclei.
DEFAULT_IMAGES = (
    "1b518cd2ea84a389c267662840f3d902d0129fab27696215db2488de6d4316c5",  # 520x696, 76
    "2cfa61bef6542dd359717e9131ce6f076c415a3bd7f48cb093b0d7f3b2ca785d",  # 520x696, 107
    "5f9d29d6388c700f35a3c29fa1b1ce0c1cba6667d05fdb70bd1e89004dcf71ed",  # 520x696, 148
    "8cdbdda8b3a64c97409c0160bcfb06eb8e876cedc3691aa63ca16dbafae6f948",  # 520x696, 92
    "e23e11414ee645b51081fb202d38b793f0c8ef2940f8228ded384899d21b02c2",  # 520x696, 199
    "10ba6cbee4873b32d5626a118a339832ba2b15d8643f66dddcd7cb2ec80fbc28",  # 520x696, 67
)


def load(image_id: str, data: Path):
    """Gray image and instance labels (RGBA → gray as ``napari-unet train`` reads it)."""
    import tifffile

    sys.path.insert(0, str(ROOT / "src"))
    from napari_unet.commands.files import read_image

    image, _ = read_image(data / "images" / f"{image_id}.png", gray="mean")
    labels = np.asarray(tifffile.imread(data / "labels" / f"{image_id}.tif")).astype(np.int32)
    return image, labels


def nearest_cells(labels: np.ndarray, n: int = 8) -> np.ndarray:
    """Ids of the ``n`` nuclei whose centroids are nearest the image centre."""
    from scipy import ndimage as ndi

    ids = np.unique(labels[labels > 0])
    centres = np.array(ndi.center_of_mass(np.ones_like(labels), labels, ids))
    mid = (np.array(labels.shape) - 1) / 2
    order = np.argsort(np.linalg.norm(centres - mid, axis=1))
    return ids[order[:n]]


def scenario(labels: np.ndarray, mode: str, n: int = 8):
    """(painted labels, annotated regions or None) of one mode: "band" or "region"."""
    chosen = nearest_cells(labels, n)
    painted = np.where(np.isin(labels, chosen), labels, 0)
    if mode == "band":
        return painted, None
    rows, cols = np.nonzero(painted)
    region = np.zeros(labels.shape, bool)
    region[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    return np.where(region, labels, 0), region  # every true nucleus inside is labelled


def run_one(image, labels, mode, config, threads, also_tta=False):
    from napari_unet.core.metrics import instance_matching
    from napari_unet.core.predict import PostprocessSettings
    from napari_unet.core.targets import describe_annotation
    from napari_unet.core.training import Trainer, TrainingPair
    from napari_unet.widgets.jobs import PredictionResult, iter_prediction

    painted, region = scenario(labels, mode)
    info = describe_annotation(painted, annotated=region, sparse=True)
    pair = TrainingPair(image, painted, annotated=region, sparse=True)
    trainer = Trainer([pair], config)
    t0 = time.perf_counter()
    last = None
    for event in trainer.run():
        last = event
        if event.kind == "step" and event.step % 100 == 0:
            print(f"  step {event.step}: loss {event.loss:.4f}, {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)
    train_s = time.perf_counter() - t0
    model, meta = trainer.snapshot()
    t0 = time.perf_counter()
    result = None
    for item in iter_prediction(model, meta, image, tta=False, stack=False):
        if isinstance(item, PredictionResult):
            result = item
    predict_s = time.perf_counter() - t0
    match = instance_matching(result.labels, labels, threshold=0.5)
    # the same probabilities without the confident cores (PostprocessSettings.seeds = 0)
    stored = PostprocessSettings.from_metadata(meta)
    no_seeds = instance_matching(stored.replace(seeds=0.0).labels(result.prob), labels,
                                 threshold=0.5)
    tta = None
    if also_tta:  # the 8 flips/rotations averaged (what the Predict widget does if stored)
        for item in iter_prediction(model, meta, image, tta=True, stack=False):
            if isinstance(item, PredictionResult):
                tta = instance_matching(item.labels, labels, threshold=0.5)["f1"]
    return {
        "mode": mode, "f1": round(float(match["f1"]), 4),
        "f1_no_seeds": round(float(no_seeds["f1"]), 4),
        "f1_tta": None if tta is None else round(float(tta), 4),
        "stored_tta": bool((meta.get("postprocess") or {}).get("tta")),
        "postprocess": {k: v for k, v in stored.to_dict().items()
                        if k in ("threshold", "seeds", "min_size", "regrow")},
        "precision": round(float(match.get("precision", np.nan)), 4),
        "recall": round(float(match.get("recall", np.nan)), 4),
        "predicted": int(len(np.unique(result.labels)) - 1), "true": int(np.count_nonzero(np.unique(labels))),
        "steps": int(trainer.step), "train_s": round(train_s, 1), "predict_s": round(predict_s, 1),
        "final_loss": None if last is None or last.loss is None else round(float(last.loss), 4),
        "rule": info["text"],
    }


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--images", type=int, default=len(DEFAULT_IMAGES),
                        help="how many of the default images (fewer for a quick check)")
    parser.add_argument("--ids", nargs="+", help="image ids instead of the default list")
    parser.add_argument("--modes", nargs="+", default=["band", "region"], choices=["band", "region"])
    parser.add_argument("--steps", type=int, help="step budget instead of the GUI default's")
    parser.add_argument("--time-limit", type=float,
                        help="seconds of training instead of the GUI default's (0: steps only)")
    parser.add_argument("--threads", type=int, help="torch threads (default: the GUI's, cores - 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--band-fraction", type=float,
                        help="experiment: band width / median cell diameter (default: the rule's)")
    parser.add_argument("--also-tta", action="store_true",
                        help="also score the same models with the 8 flips/rotations averaged")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    import dataclasses

    from napari_unet.core.training import gui_defaults
    from napari_unet.widgets.jobs import background_threads

    if args.band_fraction is not None:
        from napari_unet.core.targets import sparse

        sparse.BAND_FRACTION = args.band_fraction
    threads = args.threads or background_threads()
    config = gui_defaults("cpu")
    changes = {"threads": threads, "seed": args.seed, "device": "cpu"}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.time_limit is not None:
        changes["time_limit"] = args.time_limit or None
    config = dataclasses.replace(config, **changes)
    ids = args.ids or list(DEFAULT_IMAGES[: args.images])
    print(f"recipe: depth {config.depth}, base {config.base_channels}, tile {config.tile}, batch "
          f"{config.batch_size}, lr {config.lr}, {config.steps} steps / {config.time_limit} s, "
          f"{threads} threads; load average {os.getloadavg()}", flush=True)
    rows = []
    for image_id in ids:
        image, labels = load(image_id, args.data)
        for mode in args.modes:
            row = {"image": image_id[:12], "shape": list(labels.shape),
                   **run_one(image, labels, mode, config, threads, args.also_tta)}
            rows.append(row)
            print(f"{row['image']} {tuple(row['shape'])} {mode:6s} F1 {row['f1']:.3f} "
                  f"(P {row['precision']:.2f} R {row['recall']:.2f}, {row['predicted']} found of "
                  f"{row['true']}) {row['steps']} steps {row['train_s']} s; without the "
                  f"confident cores F1 {row['f1_no_seeds']:.3f}"
                  + (f", with the flips F1 {row['f1_tta']:.3f} (stored: {row['stored_tta']})"
                     if row["f1_tta"] is not None else "")
                  + f"; {row['postprocess']}; "
                  f"{row['rule']}",
                  flush=True)
    summary = {}
    for mode in args.modes:
        f1 = [r["f1"] for r in rows if r["mode"] == mode]
        off = [r["f1_no_seeds"] for r in rows if r["mode"] == mode]
        summary[mode] = {"mean_f1": round(float(np.mean(f1)), 4), "min_f1": round(min(f1), 4),
                         "mean_f1_no_seeds": round(float(np.mean(off)), 4),
                         "min_f1_no_seeds": round(min(off), 4)}
        flips = [r["f1_tta"] for r in rows if r["mode"] == mode and r["f1_tta"] is not None]
        if flips:
            summary[mode]["mean_f1_tta"] = round(float(np.mean(flips)), 4)
        print(f"{mode}: mean F1 {summary[mode]['mean_f1']:.3f}, min {summary[mode]['min_f1']:.3f}"
              f" (same models without the confident cores: mean "
              f"{summary[mode]['mean_f1_no_seeds']:.3f}, min {summary[mode]['min_f1_no_seeds']:.3f}"
              + (f"; with the flips: mean {np.mean(flips):.3f}" if flips else "") + ")")
    loadavg = os.getloadavg()
    print(f"load average {loadavg[0]:.2f} {loadavg[1]:.2f} {loadavg[2]:.2f} on "
          f"{os.cpu_count()} cores")
    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": "fewcells", "rows": rows, "summary": summary,
            "config": {k: v for k, v in config.to_dict().items() if k != "augment"},
            "load_average": loadavg, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "command": " ".join(sys.argv),
        }, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
