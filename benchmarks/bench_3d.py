"""Volumes: the 3D U-Net from 3 annotated xy-slices vs 2D plane by plane vs dense 3D.

On the real nuclei volumes of ``../shared/data/volumes3d`` (see its SOURCE.md), in one run and
with the same wall-clock training budget each (``--time-limit``, default 900 s):

(s) **sparse 3D**: the 3D U-Net (Çiçek et al. 2016) trained on the training volume(s) with only
    3 xy-slices annotated: the labels of those planes, everything else weight 0 (the labels
    outside the slices are erased, so nothing leaks);
(a) **2D plane by plane**: the 2D U-Net trained on the same 3 slices (as 2D images), applied to
    every plane of the held-out volume and stitched into 3D objects
    (:func:`napari_unet.core.predict.stitch.stitch_planes`: an object joins the best-overlapping one
    of the plane above at IoU ≥ 0.25, as cellpose stitches);
(b) **dense 3D**: the 3D U-Net trained on the fully annotated training volume(s).

Each model trains with the GUI's defaults for its kind (``core.training.gui_defaults`` /
``gui_defaults_3d``: on a CPU a 3D U-Net of depth 3, 8 base channels, batch normalisation,
pooling from the spacing), unless options replace them. Scored: instance F1 at IoU 0.5 over the whole held-out volume(s) (3D objects, pooled over the
volumes). Everything goes through the library's one path: ``core.training.Trainer`` to train,
``core.predict.segment`` to predict (normalise, overlap-tile, post-process with the model's
stored settings).

Default split (``--set gonuclear``): train on ``gonuclear_ovule_nuclei_1135`` (54 nuclei),
evaluate on ``gonuclear_ovule_nuclei_1136`` (32 nuclei): two crops of the same GoNuclear
acquisition (Vijayan et al. 2024), voxel 0.28 × 0.127 × 0.127 µm, i.e. spacing (2.2, 1, 1) in
xy pixels. ``--set qcanet``: train on the 8-cell, evaluate on the 16-cell QCANet embryo (Tokuoka
et al. 2020; give ``--spacing``, SOURCE.md does not state it).

    python benchmarks/bench_3d.py                      # the 3D figure of BENCHMARKS.md, 15 min per model
    python benchmarks/bench_3d.py --time-limit 30      # a quick check that it runs
    python benchmarks/bench_3d.py --only s,b --json out.json
    python benchmarks/bench_3d.py --only s --cpu-channels-last off  # the 3D step before it
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "volumes3d"
SETS = {
    # name: (train volumes, test volumes, spacing z, y, x in xy pixels)
    "gonuclear": (["gonuclear_ovule_nuclei_1135"], ["gonuclear_ovule_nuclei_1136"],
                  (0.28 / 0.127, 1.0, 1.0)),
    "qcanet": (["qcanet_embryo_nuclei_8cell"], ["qcanet_embryo_nuclei_16cell"], None),
}
MODES = {"s": "3D, 3 annotated xy-slices", "a": "2D on the same 3 slices, plane by plane",
         "b": "3D, fully annotated"}


def read_volume(data: Path, name: str):
    import tifffile

    image = tifffile.imread(data / "images" / f"{name}.tif")
    labels = tifffile.imread(data / "labels" / f"{name}.tif")
    return image, labels.astype(np.int32)


def annotated_planes(labels: np.ndarray, n: int = 3) -> list[int]:
    """``n`` xy-planes evenly inside the z range that holds nuclei (the quantiles of that range,
    ends excluded), as a user would pick them: through the middle of the objects."""
    zs = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
    z0, z1 = int(zs.min()), int(zs.max())
    return [int(z) for z in np.rint(np.linspace(z0, z1, n + 2))[1:-1]]


def training_pairs(mode: str, volumes, spacing, n_slices: int):
    """The TrainingPairs of one mode (s, a, b) from [(name, image, labels)]."""
    from napari_unet.core.targets import slices_mask
    from napari_unet.core.training import TrainingPair

    pairs, described = [], []
    for name, image, labels in volumes:
        zs = annotated_planes(labels, n_slices)
        if mode == "b":
            pairs.append(TrainingPair(image, labels, ndim=3, spacing=spacing))
            described.append(f"{name}: all {labels.shape[0]} planes")
        elif mode == "s":
            mask = slices_mask(labels.shape, z=zs)
            pairs.append(TrainingPair(image, np.where(mask, labels, 0), annotated=mask, ndim=3,
                                      spacing=spacing))
            described.append(f"{name}: z = {zs}")
        else:
            pairs += [TrainingPair(image[z], labels[z]) for z in zs]
            described.append(f"{name}: z = {zs} as 2D images")
    return pairs, described


def config(args, mode: str, spacing):
    """The GUI's defaults for the data (what Start trains untouched: ``gui_defaults`` for the 2D
    model, ``gui_defaults_3d`` with the spacing for the 3D ones), on the benchmark's budget;
    the options given on the command line replace them."""
    import dataclasses

    from napari_unet.core.training import gui_defaults, gui_defaults_3d

    three_d = mode in ("s", "b")
    base = gui_defaults_3d(args.device, spacing=spacing) if three_d else gui_defaults(args.device)
    given = {"depth": args.depth, "base_channels": args.base_channels,
             "batch_size": args.batch_size, "lr": args.lr,
             "tile": args.tile3d if three_d else args.tile2d,
             "pretrain_2d": args.pretrain_2d if three_d else None,
             "cpu_channels_last": args.cpu_channels_last}
    return dataclasses.replace(
        base, steps=args.steps, time_limit=args.time_limit, seed=args.seed,
        validate_every=args.validate_every,
        **{k: v for k, v in given.items() if v is not None})


def train(args, mode: str, volumes, spacing, log):
    from napari_unet.core.training import Trainer

    pairs, described = training_pairs(mode, volumes, spacing, args.slices)
    trainer = Trainer(pairs, config(args, mode, spacing))
    t0 = time.perf_counter()
    for ev in trainer.run():  # the Trainer's own wall-clock budget (validation included)
        if ev.kind == "validation" and ev.metrics:
            log(f"  [{mode}] step {ev.step}: {ev.metrics}")
    wall = time.perf_counter() - t0
    pre = next((h["pretrain_2d_steps"] for h in trainer.history if "pretrain_2d_steps" in h), 0)
    log(f"  [{mode}] trained {trainer.step} steps in {wall:.0f} s"
        + (f" after {pre} 2D pre-training steps" if pre else ""))
    model, metadata = trainer.snapshot()
    return model, metadata, {"data": described, "steps": trainer.step, "wall_s": round(wall, 1),
                             "pretrain_2d_steps": pre,
                             "tile": str(getattr(trainer, "tile", None)),
                             "pool": str(model.config.get("pool"))}


def evaluate(model, metadata, tests, spacing):
    """Instance matching at IoU 0.5 pooled over the held-out volumes (3D objects)."""
    from napari_unet.core.metrics import instance_matching
    from napari_unet.core.predict import segment
    from napari_unet.core.predict.stitch import stitch_planes

    tp = fp = fn = 0
    per = {}
    for name, image, truth in tests:
        if model.ndim == 3:
            _, pred = segment(model, image, metadata=metadata, spacing=spacing)
        else:  # the 2D model, plane by plane, stitched into 3D objects
            _, pred = segment(model, image, metadata=metadata, stack=True)
            pred = stitch_planes(pred)
        m = instance_matching(pred, truth, threshold=0.5)
        tp, fp, fn = tp + m["tp"], fp + m["fp"], fn + m["fn"]
        per[name] = {"f1": round(m["f1"], 4), "tp": m["tp"], "fp": m["fp"], "fn": m["fn"],
                     "predicted": int(len(np.unique(pred)) - 1)}
    return {"f1": round(2 * tp / max(2 * tp + fp + fn, 1), 4), "tp": tp, "fp": fp, "fn": fn,
            "volumes": per}


def table(report) -> str:
    lines = ["| model | training data | steps (2D pre-training) | train s | F1@0.5 (held-out) "
             "| TP / FP / FN |", "|---|---|---|---|---|---|"]
    for mode, r in report["results"].items():
        t, e = r["training"], r["test"]
        pre = f" ({t['pretrain_2d_steps']})" if t.get("pretrain_2d_steps") else ""
        lines.append(f"| ({mode}) {MODES[mode]} | {'; '.join(t['data'])} | {t['steps']}{pre} | "
                     f"{t['wall_s']:.0f} | {e['f1']:.3f} | {e['tp']} / {e['fp']} / {e['fn']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--set", default="gonuclear", choices=sorted(SETS))
    p.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"),
                   help="voxel size (relative; default: the set's, from SOURCE.md)")
    p.add_argument("--time-limit", type=float, default=900.0,
                   help="wall-clock training seconds per model (same for all three)")
    p.add_argument("--steps", type=int, help="also stop after this many steps")
    p.add_argument("--only", default="s,a,b", help="comma-separated modes among s, a, b")
    p.add_argument("--slices", type=int, default=3, help="annotated xy-slices (s and a)")
    p.add_argument("--depth", type=int, help="default: the GUI's for the device (2D / 3D)")
    p.add_argument("--base-channels", type=int, help="default: the GUI's (2D / 3D)")
    p.add_argument("--batch-size", type=int, help="default: the GUI's")
    p.add_argument("--lr", type=float, help="default: the GUI's")
    p.add_argument("--pretrain-2d", type=float,
                   help="3D models: share of the budget training the network in 2D on the "
                        "annotated planes first (default: the GUI's)")
    p.add_argument("--tile2d", type=int, help="2D input side (default: the GUI's)")
    p.add_argument("--tile3d", type=int, nargs="+",
                   help="3D input side, or Z Y X sides (default: the trainer's choice)")
    p.add_argument("--cpu-channels-last", choices=("auto", "on", "off"),
                   help="channels-last tensors on the CPU (default: auto, 3D networks "
                        "channels-last; off: the recipe before it)")
    p.add_argument("--validate-every", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--save", type=Path, help="write each model to DIR/bench_3d_<mode>.safetensors")
    args = p.parse_args(argv)
    if args.tile3d is not None:
        args.tile3d = args.tile3d[0] if len(args.tile3d) == 1 else tuple(args.tile3d)
    logging.basicConfig(level=logging.WARNING)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    train_names, test_names, spacing = SETS[args.set]
    spacing = tuple(args.spacing) if args.spacing else spacing
    if spacing is None:
        p.error(f"--set {args.set}: give --spacing Z Y X (SOURCE.md states no voxel size)")
    modes = [m.strip() for m in args.only.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        p.error(f"--only: expected modes among s, a, b, got {args.only!r}")
    train_vols = [(n, *read_volume(args.data, n)) for n in train_names]
    tests = [(n, *read_volume(args.data, n)) for n in test_names]
    report = {"set": args.set, "train": train_names, "test": test_names, "spacing": spacing,
              "time_limit_s": args.time_limit, "machine": platform.processor()
              or platform.machine(), "load_before": os.getloadavg(),
              "args": {k: str(v) for k, v in vars(args).items()}, "results": {}}
    for mode in modes:
        log(f"({mode}) {MODES[mode]}: training for at most {args.time_limit:.0f} s")
        model, metadata, training = train(args, mode, train_vols, spacing, log)
        if args.save:
            from napari_unet.core.io import save_model

            args.save.mkdir(parents=True, exist_ok=True)
            training["model"] = str(save_model(model, args.save / f"bench_3d_{mode}.safetensors",
                                               **metadata))
        t0 = time.perf_counter()
        test = evaluate(model, metadata, tests, spacing)
        log(f"  [{mode}] held-out F1@0.5 {test['f1']:.3f} ({time.perf_counter() - t0:.0f} s)")
        report["results"][mode] = {"training": training, "test": test}
    report["load_after"] = os.getloadavg()
    print(table(report))
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
