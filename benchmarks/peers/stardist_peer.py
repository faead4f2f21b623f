"""StarDist 2D trained with its own notebook's recipe for a wall-clock budget, then predicting.

Runs inside StarDist's own virtual environment (``bench_peers.py --setup`` makes it: stardist
0.9.2, csbdeep 0.8.2, tensorflow 2.21.0 on the CPU, keras 3, tensorboard), never in the
project's. The recipe is that of ``stardist/examples/2D/2_training.ipynb``: images normalised to
their 1st / 99.8th percentiles, label holes filled, ``Config2D(n_rays=32, grid=(2, 2))`` with the
default 256 × 256 patches, batch 4 and 100 steps per epoch, the notebook's augmenter (random
flips / 90° rotations, intensity scale 0.6-2 and shift ±0.2, Gaussian noise up to 0.02), a
validation part of the training images, then ``optimize_thresholds`` on that part.

The budget is wall clock from the start of the training to the end of the threshold
optimisation: the training stops at ``budget - reserve`` seconds (a Keras callback, checked
after every step), and the thresholds are optimised in the rest. After the budget the test
images are predicted (``predict_instances``, one at a time, timed) and written as TIFF labels.

    python stardist_peer.py --train DIR --eval DIR --out DIR --budget 900

``--train`` / ``--eval`` hold ``images/<id>.tif`` (float32 gray) and ``labels/<id>.tif``.
A JSON report goes to ``OUT/report.json``.
"""

# StarDist draws its patches from numpy's global generator, as its notebook's augmenter does:
# ruff: noqa: NPY002
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def read_set(folder: Path, *, labels: bool = True):
    from tifffile import imread

    ids = sorted(p.stem for p in (folder / "images").glob("*.tif"))
    images = [imread(folder / "images" / f"{i}.tif").astype(np.float32) for i in ids]
    gts = [imread(folder / "labels" / f"{i}.tif") for i in ids] if labels else None
    return ids, images, gts


def augmenter(x, y):
    """The 2D training notebook's augmenter (flips/rotations, intensity, noise)."""
    perm = tuple(np.random.permutation(2))
    x, y = x.transpose(perm), y.transpose(perm)
    for ax in range(2):
        if np.random.rand() > 0.5:
            x, y = np.flip(x, axis=ax), np.flip(y, axis=ax)
    x = x * np.random.uniform(0.6, 2) + np.random.uniform(-0.2, 0.2)
    sig = 0.02 * np.random.uniform(0, 1)
    return x + sig * np.random.normal(0, 1, x.shape), y


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--eval", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget", type=float, required=True, help="wall-clock seconds")
    p.add_argument("--reserve", type=float, default=None,
                   help="seconds kept for optimize_thresholds (default: 5 %% of the budget, "
                        "at least 45; it took 6-30 s on 10 validation images)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--gpu-recipe", action="store_true",
                   help="the notebook's full schedule (400 epochs of 100 steps) without a "
                        "budget: the ceiling on a GPU")
    args = p.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from csbdeep.utils import normalize
    from stardist import fill_label_holes
    from stardist.matching import matching_dataset
    from stardist.models import Config2D, StarDist2D
    from tifffile import imwrite

    keras = tf.keras
    np.random.seed(args.seed)
    _, X, Y = read_set(args.train)
    X = [normalize(x, 1, 99.8, axis=(0, 1)) for x in X]
    Y = [fill_label_holes(y) for y in Y]
    rng = np.random.RandomState(args.seed)
    ind = rng.permutation(len(X))
    n_val = max(1, round(args.val_fraction * len(ind)))
    val, trn = ind[-n_val:], ind[:-n_val]
    X_val, Y_val = [X[i] for i in val], [Y[i] for i in val]
    X_trn, Y_trn = [X[i] for i in trn], [Y[i] for i in trn]

    gpus = tf.config.list_physical_devices("GPU")
    conf = Config2D(n_rays=32, grid=(2, 2), n_channel_in=1, use_gpu=False,
                    train_patch_size=(256, 256))
    args.out.mkdir(parents=True, exist_ok=True)
    model = StarDist2D(conf, name="stardist", basedir=str(args.out))

    budget = float("inf") if args.gpu_recipe else args.budget
    reserve = args.reserve if args.reserve is not None else max(45.0, 0.05 * args.budget)
    start = time.perf_counter()
    stop_at = start + budget - reserve
    steps = {"n": 0}

    class Budget(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps["n"] += 1
            if time.perf_counter() >= stop_at:
                self.model.stop_training = True

    model.prepare_for_training()
    model.callbacks.append(Budget())
    kwargs = {} if args.gpu_recipe else {"epochs": 100000}
    model.train(X_trn, Y_trn, validation_data=(X_val, Y_val), augmenter=augmenter, **kwargs)
    trained = time.perf_counter() - start
    model.optimize_thresholds(X_val, Y_val)
    within = time.perf_counter() - start
    print(f"stardist: {steps['n']} steps in {trained:.0f} s, thresholds by {within:.0f} s "
          f"(budget {args.budget:.0f} s)", file=sys.stderr, flush=True)

    eval_ids, X_eval, Y_eval = read_set(args.eval)
    pred_dir = args.out / "predicted"
    pred_dir.mkdir(exist_ok=True)
    seconds, preds = [], []
    model.predict_instances(normalize(X_eval[0], 1, 99.8, axis=(0, 1)))  # warm-up
    for i, x in zip(eval_ids, X_eval, strict=True):
        t0 = time.perf_counter()
        labels, _ = model.predict_instances(normalize(x, 1, 99.8, axis=(0, 1)))
        seconds.append(time.perf_counter() - t0)
        preds.append(labels)
        imwrite(pred_dir / f"{i}.tif", labels.astype(np.int32), compression="zlib")
    own = matching_dataset(Y_eval, preds, thresh=0.5, show_progress=False)
    report = {
        "versions": {"stardist": __import__("stardist").__version__,
                     "tensorflow": tf.__version__, "keras": keras.__version__,
                     "csbdeep": __import__("csbdeep").__version__},
        "device": "gpu" if gpus else "cpu", "threads": args.threads,
        "recipe": "stardist/examples/2D/2_training.ipynb: n_rays 32, grid (2, 2), patch 256, "
                  "batch 4, augmenter, optimize_thresholds",
        "train_images": len(X_trn), "val_images": len(X_val), "budget_s": args.budget,
        "steps": steps["n"], "train_s": round(trained, 1), "within_budget_s": round(within, 1),
        "thresholds": model.thresholds._asdict(),
        "predict_s": seconds, "eval_ids": eval_ids,
        "megapixels": [x.size / 1e6 for x in X_eval],
        "stardist_matching_dataset": {k: getattr(own, k) for k in
                                      ("tp", "fp", "fn", "precision", "recall", "accuracy",
                                       "f1", "n_true", "n_pred")},
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
