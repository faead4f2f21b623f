"""Dense tissue from three annotated planes: the paper's target vs the tissue target, one run.

A new user's session on a confocal volume of plant tissue (cell-wall stain, cells packed edge
to edge: ``plantseg_ovule_cells`` of ``../shared/data/volumes3d``, see its SOURCE.md): every
cell labelled on 3 xy-planes, ``napari-unet train --ndim 3 --annotated-slices z=... --time-limit
900`` with the defaults, then ``napari-unet predict`` on the same volume, scored against all of
its cells. In one run, on the same data and budget, through the command line:

(objects) ``--target objects``: the paper's target (touching cells separated by a background
          border) and its post-processing, as the code did before the tissue target existed;
(objects+tissue) the same model predicted with ``--tissue`` forced (every tissue voxel to a
          cell, no retraining);
(tissue)  ``--target auto``: the annotation is recognised as tessellated
          (:func:`napari_unet.core.targets.recognise_target`), trained on the tissue target
          (background, cell, wall) and segmented by the tissue's seeded watershed.

Scored: 3D instance F1 at IoU 0.5 over the whole volume (3D objects, every true cell) and the
Rand error (``core.metrics.rand_error``), the cells predicted and true, and the 3D training
steps per minute (``steps / (elapsed - 2D pre-training)`` from the model's metadata: the
recipe's first quarter trains in 2D).

The issue's volume was 64 planes (planes 10, 32, 54); the shared crop has 32, so the default
planes are the same fractions of its depth (``--planes`` to choose them).

    python benchmarks/bench_tissue.py                          # the figure: 15 min per model
    python benchmarks/bench_tissue.py --time-limit 60          # a quick look
    python benchmarks/bench_tissue.py --smoke                  # seconds: that it runs (the test)
    python benchmarks/bench_tissue.py --targets tissue --recipes old,new   # the 3D CPU recipe
                                        # before and after channels-last, 15 min each

Run the figure alone on the machine (``/work/tools/bench-run``) and record ``uptime`` with it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: ``../shared/data/volumes3d`` beside the repository (or beside its worktrees' folder)
DEFAULT_DATA = next((d / "shared" / "data" / "volumes3d" for d in ROOT.parents[:2]
                     if (d / "shared" / "data" / "volumes3d").is_dir()),
                    ROOT.parent / "shared" / "data" / "volumes3d")
NAME = "plantseg_ovule_cells"
#: the issue's planes in its 64-plane volume, as fractions of the depth
ISSUE_PLANES = (10 / 64, 32 / 64, 54 / 64)
#: what --smoke trains: a tiny network on a crop, a few steps (the test of this script)
SMOKE = {"crop": (16, 40, 40), "planes": (3, 8, 12),
         "train": ["--steps", "3", "--depth", "1", "--base-channels", "2", "--tile", "18", "20",
                   "20", "--pretrain-2d", "0", "--validate-every", "2", "--val-fraction", "0.2",
                   "--cpu-bf16", "off"]}


#: the 3D CPU recipes --recipes compares: the train options that give each. new: the defaults
#: (channels-last 3D); old: the contiguous layout before it; wide: a tile of 220 x 220 voxels in
#: xy and batch 1 (1.8x the supervised voxels per second at the same steps per minute,
#: bench_3d_step.py; valid for this volume's depth 3)
RECIPES = {"new": [], "old": ["--cpu-channels-last", "off"],
           "wide": ["--tile", "124", "220", "220", "--batch-size", "1"]}


def _names(choices):
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names or any(n not in choices for n in names):
            raise argparse.ArgumentTypeError(
                f"expected comma-separated names among {', '.join(choices)}, got {text!r}")
        return names
    return parse


def read_volume(data: Path, crop=None):
    import tifffile

    image = tifffile.imread(data / "images" / f"{NAME}.tif")
    labels = tifffile.imread(data / "labels" / f"{NAME}.tif").astype(np.int32)
    if crop is not None:
        box = tuple(slice(0, c) for c in crop)
        image, labels = image[box], labels[box]
    return image, labels


def default_planes(depth: int) -> list[int]:
    """The issue's planes as fractions of ``depth`` (5, 16, 27 for 32 planes)."""
    return [min(depth - 1, round(f * depth)) for f in ISSUE_PLANES]


def write_data(folder: Path, image, labels, planes) -> tuple[Path, Path, Path]:
    """The image and its labels on the annotated planes (the rest erased: nothing leaks) as
    the command line reads them."""
    import tifffile

    from napari_unet.core.targets import slices_mask

    images, lab = folder / "images", folder / "labels"
    images.mkdir(parents=True, exist_ok=True)
    lab.mkdir(exist_ok=True)
    tifffile.imwrite(images / "ovule.tif", image)
    mask = slices_mask(labels.shape, z=planes)
    tifffile.imwrite(lab / "ovule.tif", np.where(mask, labels, 0).astype(np.int32))
    return images, lab, images / "ovule.tif"


def run_cli(argv: list[str], log) -> float:
    """``napari-unet ARGV`` in this process; its seconds (exit status 0 or a RuntimeError)."""
    from napari_unet.cli import main

    log("  napari-unet " + " ".join(argv))
    t0 = time.perf_counter()
    status = main(argv)
    if status != 0:
        raise RuntimeError(f"napari-unet {argv[0]} exited with status {status}")
    return time.perf_counter() - t0


def score(pred_path: Path, truth) -> dict:
    import tifffile

    from napari_unet.core.metrics import instance_matching, rand_error

    pred = tifffile.imread(pred_path).astype(np.int32)
    m = instance_matching(pred, truth, threshold=0.5)
    return {"f1": round(m["f1"], 4), "rand_error": round(rand_error(pred, truth), 4),
            "tp": m["tp"], "fp": m["fp"], "fn": m["fn"],
            "predicted": len(np.unique(pred[pred > 0])),
            "true": len(np.unique(truth[truth > 0])),
            "tissue_share": round(float(np.mean(pred > 0)), 4)}


def training_figures(model_path: Path) -> dict:
    """Steps, seconds, 3D steps per minute, the target and the chosen post-processing."""
    from napari_unet.core.io import read_metadata

    meta = read_metadata(model_path)
    training = meta.get("training", {})
    pre = next((h for h in meta.get("history", []) if "pretrain_2d_steps" in h), {})
    steps, elapsed = int(training.get("step", 0)), float(training.get("elapsed_s", 0.0))
    seconds_3d = elapsed - float(pre.get("elapsed_s", 0.0))
    post = {k: v for k, v in (meta.get("postprocess") or {}).items() if k != "chosen_on"}
    return {"target": meta.get("target"), "steps": steps, "elapsed_s": round(elapsed, 1),
            "pretrain_2d_steps": int(pre.get("pretrain_2d_steps", 0)),
            "steps_per_min_3d": round(60.0 * steps / seconds_3d, 2) if seconds_3d > 0 else None,
            "postprocess": post}


def rows(args, folder: Path, truth, planes, log) -> dict:
    images, labels, volume = write_data(folder, *args.volume, planes)
    base = ["--images", str(images), "--labels", str(labels), "--ndim", "3",
            "--annotated-slices", "z=" + ",".join(map(str, planes)), "--device", args.device,
            "--seed", str(args.seed)]
    if args.smoke:
        base += [*SMOKE["train"]]
    else:
        base += ["--time-limit", str(args.time_limit)]
    if args.spacing:
        base += ["--spacing", *map(str, args.spacing)]
    results = {}
    for target in args.targets:
        for recipe in args.recipes:
            # one recipe: the rows keep their names; several: each row says its recipe
            tag = target if len(args.recipes) == 1 else f"{target} ({recipe} recipe)"
            model = folder / f"{_stem(tag)}.safetensors"
            # the recipe's options first: --smoke's tiny network replaces them
            wall = run_cli(["train", *RECIPES[recipe], *base, "--target",
                            "objects" if target == "objects" else "auto", "--out", str(model)],
                           log)
            training = {**training_figures(model), "wall_s": round(wall, 1), "recipe": recipe}
            predicts = [(tag, [])] + ([(tag.replace("objects", "objects+tissue"), ["--tissue"])]
                                      if target == "objects" else [])
            results.update(predict_rows(args, folder, model, volume, truth, training, predicts,
                                        log))
    return results


def _stem(name: str) -> str:
    """A row's name as a file name: ``tissue (old recipe)`` → ``tissue_old_recipe``."""
    return re.sub(r"[^\w+]+", "_", name).strip("_")


def predict_rows(args, folder, model, volume, truth, training, predicts, log) -> dict:
    """Predict the volume with ``model`` once per (name, extra predict options), scored."""
    results = {}
    for name, extra in predicts:
        out = folder / f"pred_{_stem(name)}"
        run_cli(["predict", "--model", str(model), "--input", str(volume), "--output",
                 str(out), "--device", args.device, *extra], log)
        results[name] = {"training": training, "test": score(out / "ovule_labels.tif", truth)}
        log(f"  ({name}) F1@0.5 {results[name]['test']['f1']:.3f}, Rand error "
            f"{results[name]['test']['rand_error']:.4f}")
    return results


def table(report) -> str:
    lines = ["| model | target | 3D steps (2D pre-training) | 3D steps/min | F1@0.5 (volume) | "
             "Rand error | cells predicted / true |", "|---|---|---|---|---|---|---|"]
    for name, r in report["results"].items():
        t, e = r["training"], r["test"]
        lines.append(f"| {name} | {t['target']} | {t['steps']} ({t['pretrain_2d_steps']}) | "
                     f"{t['steps_per_min_3d']} | {e['f1']:.3f} | {e['rand_error']:.4f} | "
                     f"{e['predicted']} / {e['true']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--time-limit", type=float, default=900.0,
                   help="wall-clock training seconds per model (napari-unet train --time-limit)")
    p.add_argument("--planes", help="annotated z planes, e.g. 5,16,27 (default: the issue's "
                                    "planes 10, 32, 54 of 64 as fractions of the depth)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"),
                   help="give the voxel size to train (default: none, as the user did)")
    p.add_argument("--targets", type=_names(("objects", "tissue")), default=["objects", "tissue"],
                   help="comma-separated: objects (--target objects, also predicted with "
                        "--tissue), tissue (--target auto); default both")
    p.add_argument("--recipes", type=_names(tuple(RECIPES)), default=["new"],
                   help="comma-separated 3D CPU recipes, each trained for every target: new "
                        "(today's defaults), old (the contiguous layout before channels-last), "
                        "wide (tile 124 220 220, batch 1); default new")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true",
                   help="a tiny network on a crop for a few steps: that the script runs")
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--keep", type=Path, help="keep the models and predictions in this folder")
    args = p.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    image, truth = read_volume(args.data, SMOKE["crop"] if args.smoke else None)
    args.volume = (image, truth)
    planes = (list(SMOKE["planes"]) if args.smoke else
              [int(z) for z in args.planes.split(",")] if args.planes else
              default_planes(image.shape[0]))
    report = {"data": NAME, "shape": list(image.shape), "planes": planes,
              "time_limit_s": None if args.smoke else args.time_limit, "smoke": args.smoke,
              "machine": platform.processor() or platform.machine(),
              "load_before": os.getloadavg(), "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        report["results"] = rows(args, folder, truth, planes, log)
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
