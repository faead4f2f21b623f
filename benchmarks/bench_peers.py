"""napari-unet against StarDist: same images, same wall-clock budget, same CPU, one scorer.

Both tools train on the same training images of the DSB 2018 split (``benchmarks/splits.json``)
for the same wall-clock budget, then segment the same evaluation images, which one scorer
scores (:func:`napari_unet.core.metrics.instance_matching`, IoU 0.5):

- **napari-unet**: ``napari-unet train --images … --labels … --time-limit BUDGET`` with the
  command line's defaults (a child process: the budget covers its validation and the choice of
  the post-processing), then the evaluation images segmented by the library's one segmentation
  path (:func:`napari_unet.core.predict.segment`, what ``napari-unet predict`` runs), each timed:
  with the model's stored test-time augmentation (the default) and in one pass.
- **StarDist** 0.9.2 in its own virtual environment (``--setup`` makes it), trained with its 2D
  notebook's recipe (``benchmarks/peers/stardist_peer.py``) for the same budget, its threshold
  optimisation inside the budget; ``predict_instances`` per image, timed.

Input: each tool's own way with the mixed gray / colour (H&E) images. napari-unet gets the
original files and ``--gray`` (a one-channel model; colour turned gray by the library's rule,
stored in the model and applied by ``predict``: :func:`napari_unet.core.normalize.to_gray`).
StarDist's notebook trains one channel: it gets the mean of R, G and B (``--stardist-gray
stain``: the same hematoxylin conversion as ours, to tell the input apart from the model).
Reported per tool:
F1@0.5 as a mean per image and pooled, AP@0.5 as StarDist reports it (TP / (TP + FP + FN)),
for all, gray and colour images apart; the training steps; prediction seconds per megapixel
(median over the images, after one warm-up). StarDist's own ``matching_dataset`` on its
predictions is reported beside ours as a check of the scorer.

    python benchmarks/bench_peers.py --setup                        # StarDist's venv, once
    python benchmarks/bench_peers.py --budget 900                   # 15 minutes each
    python benchmarks/bench_peers.py --budget 3600 --train-set train --out benchmarks/out/peers_3600
    python benchmarks/bench_peers.py --tools ours --ours-steps 5600   # a slower CPU's 15 minutes
    python benchmarks/bench_peers.py --tools ours --ours-model M.safetensors  # score a model

``--train-set dsb2018`` (default): the 100 images of ``shared/data/dsb2018`` (none is a test
image); ``train``: the split's 384 training images. ``--eval test`` (default) or
``validation``. Run it alone on the machine: the figures are wall-clock budgets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dsb_split import dsb_ids, image_path, label_path, read_gray, scores  # noqa: E402

STARDIST_VENV = HERE / ".venv-stardist"
STARDIST_PINS = ["tensorflow==2.21.0", "stardist==0.9.2", "csbdeep==0.8.2", "tensorboard",
                 "tifffile", "imageio", "scikit-image"]


def setup_stardist() -> Path:
    """StarDist's own virtual environment (pinned), made once."""
    python = STARDIST_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(STARDIST_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *STARDIST_PINS], check=True)
    return python


def write_set(ids, folder: Path, *, gray: str = "mean") -> None:
    """``folder/images/<id>.tif`` (float32 gray by the rule ``gray`` of
    :func:`napari_unet.core.normalize.to_gray`), ``folder/png/<id>.png`` (the original file)
    and ``folder/labels/<id>.tif``."""
    import shutil

    from tifffile import imread, imwrite

    from napari_unet.commands.files import read_image

    for sub in ("images", "labels", "png"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in ids:
        if not (folder / "labels" / f"{i}.tif").exists():
            imwrite(folder / "images" / f"{i}.tif", read_image(image_path(i), gray=gray)[0]
                    .astype("float32"))
            shutil.copyfile(image_path(i), folder / "png" / f"{i}.png")
            imwrite(folder / "labels" / f"{i}.tif", imread(label_path(i)))


def run_logged(cmd, log: Path, env=None) -> float:
    """Run ``cmd`` with its output in ``log``; wall-clock seconds. Raises on failure."""
    t0 = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc:
        raise SystemExit(f"{cmd[0]} … failed ({rc}); see {log}")
    return time.perf_counter() - t0


def train_ours(data: Path, out: Path, budget: float, seed: int, steps: int | None = None
               ) -> dict:
    """``napari-unet train`` for ``budget`` seconds; with ``steps``, for that many steps at the
    learning rate and validation interval the planner gives the time budget (what a slower CPU
    makes of the same budget)."""
    from napari_unet.core.training.plan import cpu_recipe_lr

    out.mkdir(parents=True, exist_ok=True)
    model = out / "model.safetensors"
    cmd = [sys.executable, "-m", "napari_unet", "train", "--images", str(data / "png"),
           "--labels", str(data / "labels"), "--gray", "--out", str(model), "--seed", str(seed),
           "--force"]
    if steps:
        cmd += ["--steps", str(steps), "--lr", str(cpu_recipe_lr(steps=None, time_limit=budget)),
                "--validate-every", "1000"]
    else:
        cmd += ["--time-limit", str(budget)]
    wall = run_logged(cmd, out / "train.log")
    return {**model_record(model), "wall_s": round(wall, 1), "command": " ".join(cmd[1:])}


def model_record(model: Path) -> dict:
    """The model file and what its metadata says of its training."""
    from napari_unet.core.io import read_metadata

    tr = read_metadata(model).get("training") or {}
    return {"model": str(model), "steps": tr.get("step"), "lr": tr.get("lr"),
            "tile": tr.get("tile"), "wall_s": None, "command": None}


def predict_ours(model_path: str, ids, eval_dir: Path, out: Path) -> dict:
    """Labels and seconds per image, with the stored flips (default) and in one pass."""
    from tifffile import imwrite

    from napari_unet.commands.files import read_image
    from napari_unet.core.io import load_model
    from napari_unet.core.predict import segment
    from napari_unet.core.predict.postprocess import stored_tta

    model, meta = load_model(model_path)
    model.eval()
    images = [read_image(eval_dir / "png" / f"{i}.png") for i in ids]  # (image, channel axis)
    result = {"stored_tta": stored_tta(meta), "postprocess": meta.get("postprocess")}
    for name, tta in (("default", None), ("one_pass", False), ("flips", True)):
        if name == "flips" and stored_tta(meta):
            continue  # the default already is the flips
        folder = out / f"predicted_{name}"
        folder.mkdir(parents=True, exist_ok=True)
        segment(model, images[0][0], metadata=meta, tta=tta, channel_axis=images[0][1])
        seconds = []
        for i, (img, axis) in zip(ids, images, strict=True):
            t0 = time.perf_counter()
            _, labels = segment(model, img, metadata=meta, tta=tta, channel_axis=axis)
            seconds.append(time.perf_counter() - t0)
            imwrite(folder / f"{i}.tif", labels.astype(np.int32), compression="zlib")
        result[name] = {"folder": str(folder), "predict_s": seconds}
    return result


def score_folder(folder: Path, ids, colour: set) -> dict:
    from tifffile import imread

    from napari_unet.core.metrics import instance_matching

    rows = {"all": [], "gray": [], "colour": []}
    for i in ids:
        m = instance_matching(imread(Path(folder) / f"{i}.tif"), imread(label_path(i)),
                              threshold=0.5)
        rows["all"].append(m)
        rows["colour" if i in colour else "gray"].append(m)
    return {k: scores(v) for k, v in rows.items()}


def speed(seconds, megapixels) -> dict:
    per = [s / mp for s, mp in zip(seconds, megapixels, strict=True)]
    return {"s_per_mpixel_median": round(statistics.median(per), 3),
            "s_per_mpixel_total": round(sum(seconds) / sum(megapixels), 3),
            "total_s": round(sum(seconds), 1)}


def table(report: dict) -> str:
    lines = ["| tool | steps | F1@0.5 mean/image: all | gray | colour | pooled F1 | AP@0.5 | "
             "s / Mpixel |", "|---|---|---|---|---|---|---|---|"]
    for name, r in report["tools"].items():
        s = r["scores"]
        lines.append(
            f"| {name} | {r.get('steps')} | {s['all']['f1_mean_per_image']:.3f} | "
            f"{s['gray']['f1_mean_per_image']:.3f} | "
            f"{(s['colour'] or {}).get('f1_mean_per_image', float('nan')):.3f} | "
            f"{s['all']['f1']:.3f} | {s['all']['ap50']:.3f} | "
            f"{r['speed']['s_per_mpixel_median']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=900, help="wall-clock seconds per tool")
    p.add_argument("--train-set", default="dsb2018", choices=("dsb2018", "train"))
    p.add_argument("--eval", default="test", choices=("test", "validation"))
    p.add_argument("--tools", default="stardist,ours")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-eval", type=int, help="only the first N evaluation images")
    p.add_argument("--out", type=Path, help="default benchmarks/out/peers_<budget>")
    p.add_argument("--stardist-gray", default="mean", choices=("mean", "stain"),
                   help="how StarDist's one channel is made from a colour image")
    p.add_argument("--setup", action="store_true", help="make StarDist's venv and stop")
    p.add_argument("--ours-steps", type=int,
                   help="train napari-unet for this many steps at the budget's rate (a slower "
                        "CPU's share of the budget) instead of for the budget")
    p.add_argument("--ours-model", type=Path,
                   help="score this napari-unet model file instead of training one")
    args = p.parse_args(argv)
    if args.setup:
        print(setup_stardist())
        return 0
    out = args.out or HERE / "out" / f"peers_{int(args.budget)}"
    train_ids, eval_ids, colour = dsb_ids(args.train_set, args.eval)
    eval_ids = eval_ids[: args.max_eval] if args.max_eval else eval_ids
    data = out / f"data_{args.stardist_gray}"
    write_set(train_ids, data / "train", gray=args.stardist_gray)
    write_set(eval_ids, data / "eval", gray=args.stardist_gray)
    megapixels = [read_gray(image_path(i)).size / 1e6 for i in eval_ids]
    report = {"args": {k: str(v) for k, v in vars(args).items()},
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "train_images": len(train_ids), "eval_images": len(eval_ids),
              "eval_colour": len([i for i in eval_ids if i in colour]),
              "load_before": os.getloadavg(), "tools": {}}
    tools = args.tools.split(",")
    if "stardist" in tools:
        python = setup_stardist()
        sd_out = out / "stardist"
        cmd = [str(python), str(HERE / "peers" / "stardist_peer.py"), "--train",
               str(data / "train"), "--eval", str(data / "eval"), "--out",
               str(sd_out), "--budget", str(args.budget)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        wall = run_logged(cmd, out / "stardist.log", env=env)
        sd = json.loads((sd_out / "report.json").read_text())
        report["tools"]["StarDist"] = {
            "steps": sd["steps"], "train_s": sd["train_s"], "within_budget_s":
            sd["within_budget_s"], "thresholds": sd["thresholds"], "wall_s": round(wall, 1),
            "versions": sd["versions"],
            "scores": score_folder(sd_out / "predicted", eval_ids, colour),
            "speed": speed(sd["predict_s"], megapixels),
            "stardist_matching_dataset": sd["stardist_matching_dataset"]}
    if "ours" in tools:
        ours = (model_record(args.ours_model) if args.ours_model else
                train_ours(data / "train", out / "ours", args.budget, args.seed, args.ours_steps))
        pred = predict_ours(ours["model"], eval_ids, data / "eval", out / "ours")
        for name in ("default", "one_pass", "flips"):
            if name in pred:
                label = {"default": "napari-unet (default)", "one_pass": "napari-unet (one pass)",
                         "flips": "napari-unet (test-time augmentation)"}[name]
                report["tools"][label] = {
                    **{k: ours[k] for k in ("steps", "wall_s", "lr", "tile", "command")},
                    "stored_tta": pred["stored_tta"], "postprocess": pred["postprocess"],
                    "scores": score_folder(Path(pred[name]["folder"]), eval_ids, colour),
                    "speed": speed(pred[name]["predict_s"], megapixels)}
    report["load_after"] = os.getloadavg()
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    print(f"report: {out / 'report.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
