"""The correct-and-retrain loop on DSB 2018 nuclei: F1 on an unseen image after each round.

What a user does in the GUI, with the same core calls (run folders written and trained as the
Train widget does: ``engine.runs.write_run`` → ``engine.training.trainer_from_run`` → ``record_events``; the
Predict widget's prediction: ``core.predict.predict_image`` → ``labels_from_probabilities``):

0. Start: paint the 8 cells nearest the centre of the first image, train with the GUI defaults.
1. Three rounds, on three images in turn: predict the image with the current model; "correct"
   it by taking the true labels of the 10 worst cells (lowest IoU with the prediction, missed
   cells first) in place of the prediction there; Continue training: fine-tune the current
   model on all pairs so far (the corrected prediction of each image replaces that image's
   earlier annotation).
2. After the start and after each round: instance F1@0.5 of the current model on a fourth image
   that is never trained on, and the mean over it and ``--unseen`` more unseen images (one
   cell moves one image's F1 by about 0.01: the mean over several is the steadier curve).

Each Continue trains at the Train widget's fine-tuning rate (``core.training.fine_tune``: a
quarter of Start's), as the widget does; ``--continue-lr`` overrides it.

    python benchmarks/bench_loop.py                            # GUI budgets (1500 steps / 2 min)
    python benchmarks/bench_loop.py --seeds 3                  # mean curve and spread of 3 runs
    python benchmarks/bench_loop.py --start-minutes 0.3 --round-minutes 0.2 --json out.json

Prints each seed's curve, the mean curve with its spread (std, min-max) and the machine load
(``os.getloadavg``); writes JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsb2018"
#: three 520×696 images for the loop and a fourth, unseen one for the score (67–107 nuclei)
DEFAULT_IMAGES = (
    "10ba6cbee4873b32d5626a118a339832ba2b15d8643f66dddcd7cb2ec80fbc28",
    "1b518cd2ea84a389c267662840f3d902d0129fab27696215db2488de6d4316c5",
    "2cfa61bef6542dd359717e9131ce6f076c415a3bd7f48cb093b0d7f3b2ca785d",
    "8cdbdda8b3a64c97409c0160bcfb06eb8e876cedc3691aa63ca16dbafae6f948",
)
#: more unseen 520×696 images (148 and 199 nuclei): the mean over the fourth image and these is
#: the less noisy curve (one cell moves one image's F1 by about 0.01)
DEFAULT_UNSEEN = (
    "5f9d29d6388c700f35a3c29fa1b1ce0c1cba6667d05fdb70bd1e89004dcf71ed",
    "e23e11414ee645b51081fb202d38b793f0c8ef2940f8228ded384899d21b02c2",
)


def load(data: Path, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Gray float32 image (mean of R, G, B) and uint16 instance labels."""
    import imageio.v3 as iio
    import tifffile

    rgba = iio.imread(data / "images" / f"{image_id}.png")
    image = rgba[..., :3].astype(np.float32).mean(axis=-1) if rgba.ndim == 3 else rgba
    return image.astype(np.float32), tifffile.imread(data / "labels" / f"{image_id}.tif")


def gui_config(**changes):
    """The Train widget's starting settings on the CPU (:func:`napari_unet.core.training.
    gui_defaults`) with ``changes``."""
    from napari_unet.core.training import gui_defaults

    return dataclasses.replace(gui_defaults("cpu"), **changes)


def painted_pair(image, truth, n: int):
    """The n true cells nearest the image centre as the user's painted cells (no regions)."""
    from napari_unet.core.training import TrainingPair

    ids = np.unique(truth)[1:]
    centre = np.array(truth.shape) / 2
    dist = [np.linalg.norm(np.argwhere(truth == i).mean(0) - centre) for i in ids]
    keep = ids[np.argsort(dist)[:n]]
    labels = np.where(np.isin(truth, keep), truth, 0).astype(np.uint16)
    return TrainingPair(image, labels, sparse=True)  # the GUI's rule: painted cells + a band


def correct(pred: np.ndarray, truth: np.ndarray, n: int) -> tuple[np.ndarray, list[float]]:
    """The prediction with the n worst true cells replaced by their true labels."""
    from scipy import ndimage as ndi

    out = pred.astype(np.int32).copy()
    ids = np.unique(truth)[1:]
    best = []
    for i in ids:
        cell = truth == i
        hits, counts = np.unique(pred[cell], return_counts=True)
        iou = 0.0
        for h, c in zip(hits, counts, strict=True):
            if h:
                iou = max(iou, c / np.sum(cell | (pred == h)))
        best.append(iou)
    worst = ids[np.argsort(best, kind="stable")[:n]]
    next_id = int(out.max()) + 1
    for k, i in enumerate(worst):
        cell = truth == i
        ring = ndi.binary_dilation(cell, iterations=1) & ~cell
        out[ring] = 0  # separated from the neighbours, as a user would leave it
        out[cell] = next_id + k
    return out, sorted(best)[:n]


def predict(model, metadata, image) -> np.ndarray:
    """Labels as the Predict widget makes them: the one segmentation path, with the
    post-processing stored in the model at the end of its training."""
    from napari_unet.core.predict import segment

    return segment(model, image, metadata=metadata, device="cpu")[1]


def train_run(root: Path, pairs, names, config, parent):
    """One GUI training: write the run folder, train it as written; returns (model path, info)."""
    from napari_unet.engine import runs
    from napari_unet.engine import training as run_training

    run_dir = runs.new_run_dir(root, name=names[-1][:12])
    runs.write_run(run_dir, pairs, settings=config, seed=config.seed, parent_model=parent,
                   sparse=any(getattr(p, "sparse", False) for p in pairs), names=names)
    trainer = run_training.trainer_from_run(run_dir)
    t0 = time.perf_counter()
    for _ in run_training.record_events(run_dir, trainer.run()):
        pass
    path = trainer.save(run_dir / "model.safetensors")
    kept = {} if trainer.kept is None else {"kept": trainer.kept.kept,
                                            "kept_message": trainer.kept.message}
    return path, {"run": str(run_dir), "steps": trainer.step,
                  "train_s": round(time.perf_counter() - t0, 1), "pairs": len(pairs), **kept}


def fine_tune_config(**changes):
    """The settings of each Continue: the GUI's, at the Train widget's fine-tuning rate
    (:func:`napari_unet.core.training.fine_tune`, as ``write_gui_run`` applies it)."""
    from napari_unet.core.training import fine_tune

    return fine_tune(gui_config(**changes))


def run_loop(args, data, root: Path, seed: int) -> list[dict]:
    """Start, then three rounds of predict → correct → Continue; the curve of one seed."""
    from napari_unet.core.io import load_model
    from napari_unet.core.metrics import instance_f1
    from napari_unet.core.training import TrainingPair

    steps = {} if args.steps is None else {"steps": args.steps}

    def score(path):
        """F1 on the fourth image, and the F1 of every unseen image (the fourth first)."""
        model, meta = load_model(path)
        f1 = [float(instance_f1(predict(model, meta, image), truth)) for image, truth in data[3:]]
        return f1[0], f1

    image0, truth0 = data[0]
    pairs = {0: painted_pair(image0, truth0, args.paint)}
    config = gui_config(time_limit=60 * args.start_minutes, seed=seed, **steps)
    path, info = train_run(root, list(pairs.values()), ["image0"], config, None)
    f1, f1_all = score(path)
    curve = [{"round": 0, "f1_unseen": f1, "f1_unseen_all": f1_all,
              "f1_unseen_mean": float(np.mean(f1_all)), **info}]
    print(f"seed {seed} round 0 (Start, {args.paint} painted cells, lr {config.lr:g}): F1@0.5 "
          f"unseen {f1:.3f}, mean of {len(f1_all)} unseen {np.mean(f1_all):.3f} "
          f"({info['steps']} steps, {info['train_s']} s)", flush=True)
    for k in range(3):
        image, truth = data[k]
        model, meta = load_model(path)
        pred = predict(model, meta, image)
        f1_before = float(instance_f1(pred, truth))
        corrected, worst = correct(pred, truth, args.worst)
        # the corrected prediction, trained as the Train widget does by default ("labels are
        # complete" unticked: the cells, a band around them and nothing else count)
        pairs[k] = TrainingPair(image, corrected, sparse=True)
        config = fine_tune_config(time_limit=60 * args.round_minutes, seed=seed, **steps)
        if args.continue_lr is not None:
            config = dataclasses.replace(config, lr=args.continue_lr)
        path, info = train_run(root, list(pairs.values()), [f"image{i}" for i in pairs],
                               config, path)
        f1, f1_all = score(path)
        row = {"round": k + 1, "image": args.images[k], "f1_image_before": f1_before,
               "worst_iou": [round(w, 3) for w in worst], "f1_unseen": f1,
               "f1_unseen_all": f1_all, "f1_unseen_mean": float(np.mean(f1_all)),
               "lr": config.lr, **info}
        curve.append(row)
        print(f"seed {seed} round {k + 1} (image {k}: F1 {f1_before:.3f} before correction, "
              f"{args.worst} cells corrected, lr {config.lr:g}): F1@0.5 unseen "
              f"{f1:.3f}, mean of {len(f1_all)} unseen {np.mean(f1_all):.3f} ({info['steps']} steps, {info['train_s']} s, "
              f"{info['pairs']} pairs)", flush=True)
    return curve


def summarise(curves: list[list[dict]], key: str = "f1_unseen") -> dict:
    """Mean, standard deviation, min and max of the unseen F1 (``key``: the fourth image's, or
    ``"f1_unseen_mean"``, the mean over all unseen images) per round over the seeds."""
    f1 = np.array([[row[key] for row in curve] for curve in curves])
    return {"mean": f1.mean(0).round(4).tolist(), "std": f1.std(0).round(4).tolist(),
            "min": f1.min(0).round(4).tolist(), "max": f1.max(0).round(4).tolist(),
            "rises": int(np.sum(f1[:, -1] > f1[:, 0])), "seeds": len(curves)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--images", nargs=4, default=DEFAULT_IMAGES,
                   help="three image ids for the loop, then the unseen test image")
    p.add_argument("--unseen", nargs="*", default=DEFAULT_UNSEEN,
                   help="more unseen image ids, scored with the fourth (the mean curve)")
    p.add_argument("--paint", type=int, default=8, help="cells painted before Start")
    p.add_argument("--worst", type=int, default=10, help="cells corrected per round")
    p.add_argument("--start-minutes", type=float, default=2.0, help="Start's budget (GUI: 2)")
    p.add_argument("--round-minutes", type=float, default=2.0,
                   help="each Continue's budget (GUI: the form's, 2; before: 1)")
    p.add_argument("--steps", type=int, help="step cap of every training (default: the GUI's)")
    p.add_argument("--continue-lr", type=float,
                   help="learning rate of each Continue (default: the Train widget's "
                        "fine-tuning rate, core.training.fine_tune)")
    p.add_argument("--seeds", type=int, default=1,
                   help="run the whole loop this many times (training seeds 0..N-1) and print "
                        "the mean curve and its spread")
    p.add_argument("--runs", type=Path, help="runs root (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    if args.seeds < 1:
        p.error(f"--seeds: expected at least 1, got {args.seeds}")

    load_before = os.getloadavg()
    root = args.runs or Path(tempfile.mkdtemp(prefix="bench_loop_"))
    data = [load(args.data, i) for i in (*args.images, *args.unseen)]
    curves = []
    for seed in range(args.seeds):
        curves.append(run_loop(args, data, root / f"seed{seed}", seed))
        print(f"seed {seed} curve (F1@0.5 on the unseen image): "
              + " -> ".join(f"{r['f1_unseen']:.3f}" for r in curves[-1]), flush=True)
    summary = summarise(curves)
    summary_all = summarise(curves, "f1_unseen_mean")
    load_after = os.getloadavg()
    for title, s in (("the fourth image", summary),
                     (f"the mean of {1 + len(args.unseen)} unseen images", summary_all)):
        print(f"{title}, mean curve over {args.seeds} seed(s): "
              + " -> ".join(f"{m:.3f}" for m in s["mean"]))
        print("  spread (std / min-max): " + ", ".join(
            f"{sd:.3f} / {lo:.3f}-{hi:.3f}"
            for sd, lo, hi in zip(s["std"], s["min"], s["max"], strict=True)))
        print(f"  last round above the start in {s['rises']} of {args.seeds} seed(s)")
    print(f"load average before {load_before}, after {load_after}; cores {os.cpu_count()}")
    result = {
        "benchmark": "bench_loop", "images": list(args.images), "paint": args.paint,
        "worst": args.worst, "start_minutes": args.start_minutes,
        "round_minutes": args.round_minutes, "steps": args.steps,
        "continue_lr": args.continue_lr, "seeds": args.seeds, "summary": summary,
        "unseen": list(args.unseen), "summary_unseen_mean": summary_all,
        "curves": curves, "load_before": load_before, "load_after": load_after,
        "cpu_count": os.cpu_count(), "platform": platform.platform(), "runs_root": str(root),
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
