"""The DSB 2018 split of ``benchmarks/splits.json`` and the scorer the DSB benchmarks share.

Parts: ``train`` (384 images), ``validation`` (80: every choice is made here) and ``test``
(100, all in ``shared/data/dsb2018_more``: scored once per change, never used to choose).
Training sets a benchmark may ask for: ``train`` (the split's training images),
``dsb2018`` (the 100 images of ``shared/data/dsb2018``, which hold no test image: the
training set of the 15-minute figure) and ``dsb2018-train`` (those of the 100 in ``train``:
a training that leaves every validation image out, for choices made on validation).
"""

from __future__ import annotations

import json
import statistics
from functools import cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# the shared data beside the repository (its parent folder, or one above for a git worktree)
DATA = next((d / "shared" / "data" for d in HERE.parents[1:3] if (d / "shared" / "data").is_dir()),
            HERE.parents[1] / "shared" / "data")
TRAIN_SETS = ("train", "dsb2018", "dsb2018-train")
EVAL_SETS = ("validation", "test")


@cache
def split() -> dict:
    return json.loads((HERE / "splits.json").read_text())["dsb2018"]


@cache
def _folder_of() -> dict:
    return {p.stem: p.parents[1] for f in split()["folders"]
            for p in (DATA / f / "images").glob("*.png")}


def image_path(i: str) -> Path:
    return _folder_of()[i] / "images" / f"{i}.png"


def label_path(i: str) -> Path:
    return _folder_of()[i] / "labels" / f"{i}.tif"


def dsb_ids(train_set: str, eval_set: str) -> tuple[list[str], list[str], set[str]]:
    """(training ids, evaluation ids, colour ids); refuses a training set that holds
    evaluation images."""
    s = split()
    first = {p.stem for p in (DATA / "dsb2018" / "images").glob("*.png")}
    train = {"train": set(s["train"]), "dsb2018": first,
             "dsb2018-train": first & set(s["train"])}[train_set]
    evaluation = s[eval_set]
    if train & set(evaluation):
        raise SystemExit(f"--train-set {train_set} holds {len(train & set(evaluation))} of the "
                         f"{eval_set} images; train on dsb2018-train or train to score on "
                         f"{eval_set}")
    return sorted(train), list(evaluation), set(s["colour"])


def read_gray(path: Path) -> np.ndarray:
    """The image as float32 gray: the mean of R, G and B (alpha dropped)."""
    import imageio.v3 as iio

    a = iio.imread(path)
    a = a[..., :3] if a.ndim == 3 else a
    return (a.astype(np.float32).mean(-1) if a.ndim == 3 else a.astype(np.float32))


def scores(rows):
    """Pooled (StarDist's ``matching_dataset``) and per-image F1 / AP@0.5 over rows of
    :func:`napari_unet.core.metrics.instance_matching` dicts; AP@0.5 is StarDist's
    "accuracy", TP / (TP + FP + FN)."""
    if not rows:
        return None
    tp, fp, fn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn"))
    per_ap = [r["tp"] / max(r["tp"] + r["fp"] + r["fn"], 1) for r in rows]
    return {
        "images": len(rows),
        "f1": round(2 * tp / max(2 * tp + fp + fn, 1), 4),
        "ap50": round(tp / max(tp + fp + fn, 1), 4),
        "f1_mean_per_image": round(statistics.mean(r["f1"] for r in rows), 4),
        "ap50_mean_per_image": round(statistics.mean(per_ap), 4),
        "tp": tp, "fp": fp, "fn": fn,
    }
