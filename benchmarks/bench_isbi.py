"""Quality on real data: ISBI 2012 (train 00–19, validate 20–24) and DSB 2018 (80/20).

For each preset, train for ``--minutes`` of training wall time (evaluation time excluded) and
record the validation Rand error (ISBI 2012 definition, foreground-restricted) and pixel error
against time; then a random-forest pixel classifier on ilastik-like filter features trained on the
same slices (the usual alternative); then DSB 2018 instance F1@0.5 with the default preset.

    python benchmarks/bench_isbi.py --minutes 15            # the full run (quiet machine)
    python benchmarks/bench_isbi.py --minutes 3 --dsb-minutes 3 --json out.json
    python benchmarks/bench_isbi.py --cli-minutes 15 --presets --no-rf   # the CLI route only

``--cli-minutes M`` measures the route a user takes: ``napari-unet train`` on slices 00–19 with
the command line's defaults and ``--time-limit`` 60·M (wall clock), then ``napari-unet evaluate``
on slices 20–24 with its defaults: the post-processing (threshold included) chosen on the
validation band at the end of training and stored in the model. Reported: the mean held-out
Rand error (target ≤ 0.045), pixel error, the stored threshold and the steps trained.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_isbi(root: Path):
    import imageio.v3 as iio

    images = [iio.imread(root / "image" / f"{i:02d}.png") for i in range(25)]
    labels = [iio.imread(root / "label" / f"{i:02d}.png") for i in range(25)]
    return images[:20], labels[:20], images[20:], labels[20:]


THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def scores_from_probability(cell_probs, labels) -> dict:
    """Mean Rand and pixel errors at threshold 0.5 and the best over thresholds.

    Rand error is the ISBI 2012 "V_rand (thinned)" (``core.metrics.rand_error``, predicted
    boundaries given to the nearest segment); ``rand_error_unthinned`` (at 0.5) keeps every
    predicted-boundary pixel as a singleton, the stricter variant. The challenge reports
    1 − the *maximal* F-score over thresholds of the submitted probability maps; ``*_best`` is
    that (one threshold for all validation slices, the one maximising the mean F-score).
    """
    from napari_unet.core.metrics import pixel_error, rand_error
    from napari_unet.core.predict import labels_from_probabilities

    table = {}
    for t in THRESHOLDS:
        rand, pix = [], []
        for p, gt in zip(cell_probs, labels, strict=True):
            pred = labels_from_probabilities(np.stack([1 - p, p]), threshold=t, min_size=0,
                                             fill_holes=False)
            rand.append(rand_error(pred, gt))
            pix.append(pixel_error(pred, gt))
        table[t] = (float(np.mean(rand)), float(np.mean(pix)))
        if t == 0.5:
            unthinned = float(np.mean([
                rand_error(labels_from_probabilities(np.stack([1 - p, p]), threshold=t,
                                                     min_size=0, fill_holes=False), gt,
                           thin=False)
                for p, gt in zip(cell_probs, labels, strict=True)]))
    best_t = min(table, key=lambda t: table[t][0])
    return {"rand_error": table[0.5][0], "pixel_error": table[0.5][1],
            "rand_error_unthinned": unthinned,
            "rand_error_best": table[best_t][0], "pixel_error_best": min(v[1] for v in
                                                                         table.values()),
            "best_threshold": best_t}


def isbi_probs(model, meta, images, device) -> list[np.ndarray]:
    from napari_unet.core.predict import predict_image

    return [predict_image(model, im, metadata=meta, device=device)[1] for im in images]


def isbi_scores(model, meta, images, labels, device) -> dict:
    return scores_from_probability(isbi_probs(model, meta, images, device), labels)


def train_isbi(preset: str, minutes: float, eval_every: float, data, args) -> dict:
    from napari_unet.core.training import TrainConfig, Trainer

    tr_img, tr_lab, va_img, va_lab = data
    cfg = TrainConfig(preset=preset, steps=None, time_limit=60 * minutes, validate_every=0,
                      val_fraction=0.0, device="cpu", seed=0, base_channels=args.base_channels,
                      lr=args.lr.get(preset), tile=args.tile, w0=args.w0, sigma=args.sigma,
                      dropout=args.dropout, batch_size=args.batch_size,
                      cpu_bf16=args.cpu_bf16)
    trainer = Trainer(list(zip(tr_img, tr_lab, strict=True)), cfg)
    trainer.clock = args.clock
    curve, next_eval, t_prep = [], eval_every, time.perf_counter()
    losses = []
    for event in trainer.run():
        if event.kind == "step":
            losses.append(event.loss)
            if trainer.elapsed >= next_eval:
                model, meta = trainer.snapshot()
                s = isbi_scores(model, meta, va_img, va_lab, "cpu")
                curve.append({"train_s": round(trainer.elapsed, 1), "step": trainer.step,
                              "loss": float(np.mean(losses[-20:])), **s})
                print(f"  {preset}: {trainer.elapsed:6.0f} s step {trainer.step:5d} "
                      f"loss {curve[-1]['loss']:.4f} rand {s['rand_error']:.4f} "
                      f"(best {s['rand_error_best']:.4f}) pixel {s['pixel_error']:.4f}", flush=True)
                next_eval += eval_every
    model, meta = trainer.snapshot()
    probs = isbi_probs(model, meta, va_img, "cpu")
    if args.save_probs:
        np.save(f"{args.save_probs}_{preset}.npy", np.stack(probs))
    final = scores_from_probability(probs, va_lab)
    curve.append({"train_s": round(trainer.elapsed, 1), "step": trainer.step,
                  "loss": float(np.mean(losses[-20:])), **final})
    print(f"  {preset}: final {final} after {trainer.step} steps", flush=True)
    return {"preset": preset, "lr": trainer.lr, "tile": trainer.tile, "steps": trainer.step,
            "train_s": trainer.elapsed, "wall_s": time.perf_counter() - t_prep,
            "curve": curve, "final": final}


def cli_route(minutes: float, data, *, workdir: Path, extra: tuple[str, ...] = ()) -> dict:
    """``napari-unet train`` (defaults, ``--time-limit``) then ``napari-unet evaluate`` (defaults)
    on the held-out slices, in-process as a user would run them; the evaluation's JSON."""
    import contextlib
    import io

    import tifffile

    from napari_unet.cli import main as cli
    from napari_unet.core.io import read_metadata
    from napari_unet.core.predict.postprocess import stored_tta

    folders = {}
    for part, images, labels in (("train", data[0], data[1]), ("test", data[2], data[3])):
        for kind, arrays in (("images", images), ("labels", labels)):
            folder = folders[part, kind] = workdir / part / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i, a in enumerate(arrays):
                tifffile.imwrite(folder / f"{i:02d}.tif", np.asarray(a))
    model = workdir / "isbi.safetensors"
    argv = ["train", "--images", str(folders["train", "images"]), "--labels",
            str(folders["train", "labels"]), "--out", str(model), "--time-limit",
            str(60 * minutes), *extra]
    print("  $ napari-unet " + " ".join(argv), flush=True)
    t0 = time.perf_counter()
    if cli(argv):
        raise SystemExit("napari-unet train failed")
    wall = time.perf_counter() - t0
    argv = ["evaluate", "--model", str(model), "--images", str(folders["test", "images"]),
            "--labels", str(folders["test", "labels"]), "--json"]
    print("  $ napari-unet " + " ".join(argv), flush=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if cli(argv):
            raise SystemExit("napari-unet evaluate failed")
    result = json.loads(out.getvalue())
    meta = read_metadata(model)

    def also(*options):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            if cli([*argv, *options]):
                raise SystemExit(f"napari-unet evaluate {' '.join(options)} failed")
        return json.loads(out.getvalue())["mean"]

    # the default averaged the flips: one pass too; the stored cores: the same without them
    other = also("--no-tta") if stored_tta(meta) else None
    seeds = (meta.get("postprocess") or {}).get("seeds")
    no_seeds = also("--seeds", "0") if seeds else None
    return {"train_wall_s": round(wall, 1), "steps": meta["training"]["step"],
            "postprocess": meta.get("postprocess"), "mean": result["mean"],
            "images": result["images"], "train_args": list(extra),
            "tta": stored_tta(meta), "mean_one_pass": other, "mean_no_seeds": no_seeds}


def filter_features(image: np.ndarray, sigmas=(0.7, 1.0, 1.6, 3.5, 5.0, 10.0)) -> np.ndarray:
    """ilastik's default pixel features: Gaussian, LoG, gradient magnitude, Hessian and
    structure-tensor eigenvalues at several scales; (H*W, F) float32."""
    from scipy import ndimage as ndi

    x = image.astype(np.float32) / 255.0
    feats = [x]
    for s in sigmas:
        feats.append(ndi.gaussian_filter(x, s))
        feats.append(ndi.gaussian_laplace(x, s))
        feats.append(ndi.gaussian_gradient_magnitude(x, s))
        hrr = ndi.gaussian_filter(x, s, order=(2, 0))
        hcc = ndi.gaussian_filter(x, s, order=(0, 2))
        hrc = ndi.gaussian_filter(x, s, order=(1, 1))
        feats.extend(_eig2(hrr, hrc, hcc))
        gr = ndi.gaussian_filter(x, 0.5 * s, order=(1, 0))
        gc = ndi.gaussian_filter(x, 0.5 * s, order=(0, 1))
        feats.extend(_eig2(ndi.gaussian_filter(gr * gr, s), ndi.gaussian_filter(gr * gc, s),
                           ndi.gaussian_filter(gc * gc, s)))
    return np.stack(feats, axis=-1).reshape(-1, len(feats)).astype(np.float32)


def _eig2(a, b, c):
    """Eigenvalues of the symmetric 2×2 matrices [[a, b], [b, c]] (larger first)."""
    mean, diff = 0.5 * (a + c), np.sqrt(0.25 * (a - c) ** 2 + b * b)
    return [mean + diff, mean - diff]


def random_forest(data, *, samples: int, trees: int, threads: int) -> dict:
    from sklearn.ensemble import RandomForestClassifier

    tr_img, tr_lab, va_img, va_lab = data
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    xs, ys = [], []
    per = samples // len(tr_img)
    for image, lab in zip(tr_img, tr_lab, strict=True):
        f = filter_features(image)
        idx = rng.choice(len(f), per, replace=False)
        xs.append(f[idx])
        ys.append((lab.ravel()[idx] > 0).astype(np.uint8))
    rf = RandomForestClassifier(n_estimators=trees, n_jobs=threads, random_state=0,
                                min_samples_leaf=2)
    rf.fit(np.concatenate(xs), np.concatenate(ys))
    t_train = time.perf_counter() - t0
    probs = [rf.predict_proba(filter_features(im))[:, 1].reshape(im.shape).astype(np.float32)
             for im in va_img]
    res = {**scores_from_probability(probs, va_lab),
           "train_s": t_train, "total_s": time.perf_counter() - t0, "samples": samples,
           "trees": trees}
    print(f"  random forest: {res}", flush=True)
    return res


def dsb(minutes: float, args) -> dict:
    from napari_unet.commands.evaluate import evaluate_pairs
    from napari_unet.commands.files import read_pairs
    from napari_unet.core.training import TrainConfig, Trainer, TrainingPair

    rows = read_pairs([DATA / "dsb2018" / "images"], [DATA / "dsb2018" / "labels"], gray="mean")
    order = np.random.default_rng(0).permutation(len(rows))
    train = [rows[i] for i in order[:80]]
    val = [rows[i] for i in order[80:]]
    cfg = TrainConfig(preset=args.dsb_preset, steps=None, time_limit=60 * minutes,
                      validate_every=0, val_fraction=0.0, device="cpu", seed=0,
                      base_channels=args.base_channels)
    trainer = Trainer([TrainingPair(r["image"], r["labels"]) for r in train], cfg)
    trainer.clock = args.clock
    for _ in trainer.run():
        pass
    model, meta = trainer.snapshot()
    res = evaluate_pairs(model, meta, val)["mean"]
    out = {"preset": args.dsb_preset, "steps": trainer.step, "train_s": trainer.elapsed,
           "tile": trainer.tile, **res}
    print(f"  dsb2018: {out}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=15.0, help="training minutes per preset")
    p.add_argument("--presets", nargs="*", default=["adamw", "paper"])
    p.add_argument("--eval-every", type=float, default=60.0, help="seconds of training")
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--tile", type=int, default=None)
    p.add_argument("--lr-adamw", type=float)
    p.add_argument("--lr-paper", type=float)
    p.add_argument("--w0", type=float, default=10.0)
    p.add_argument("--sigma", type=float, default=5.0)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--cpu-bf16", default="auto", choices=("auto", "on", "off"),
                   help="bfloat16 autocast on the CPU (auto: where the CPU computes bf16)")
    p.add_argument("--save-probs", help="save the final validation probabilities to PREFIX_<preset>.npy")
    p.add_argument("--rf-samples", type=int, default=200_000)
    p.add_argument("--rf-trees", type=int, default=100)
    p.add_argument("--no-rf", action="store_true")
    p.add_argument("--dsb-minutes", type=float, default=0.0, help="0 skips DSB 2018")
    p.add_argument("--dsb-preset", default="adamw")
    p.add_argument("--cli-minutes", type=float, default=0.0,
                   help="train/evaluate through the command line with its defaults for this "
                        "many wall-clock minutes (0 skips it)")
    p.add_argument("--cli-args", default="",
                   help="extra options for napari-unet train on the CLI route (one string), "
                        "to compare a recipe with the defaults")
    p.add_argument("--cli-workdir", type=Path,
                   help="keep the CLI route's files (images, model, checkpoints) here")
    p.add_argument("--json", type=Path, help="write all results here")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="budget in wall time, or in process CPU time / threads (shared machine)")
    args = p.parse_args()
    args.lr = {"adamw": args.lr_adamw, "paper": args.lr_paper}
    import torch

    from napari_unet.core.device import configure_cpu_threads

    threads = configure_cpu_threads()
    if args.clock == "cpu":
        args.clock = lambda: time.process_time() / threads
    else:
        args.clock = time.perf_counter
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} with {threads} threads; {args.minutes} min per preset "
          f"({'CPU time / threads' if args.clock is not time.perf_counter else 'wall time'})")
    data = load_isbi(DATA / "isbi2012")

    def save(results: dict) -> None:  # after every part: a cut-short run keeps what it has
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))

    results = {"minutes": args.minutes, "threads": threads, "isbi": {}}
    for preset in args.presets:
        try:
            results["isbi"][preset] = train_isbi(preset, args.minutes, args.eval_every, data, args)
        except FloatingPointError as err:  # a diverging preset is a result, not a crash
            print(f"  {preset}: diverged: {err}", flush=True)
            results["isbi"][preset] = {"error": str(err)}
        save(results)
    if not args.no_rf:
        results["random_forest"] = random_forest(data, samples=args.rf_samples,
                                                 trees=args.rf_trees, threads=threads)
        save(results)
    if args.dsb_minutes > 0:
        results["dsb2018"] = dsb(args.dsb_minutes, args)
        save(results)
    if args.cli_minutes > 0:
        import tempfile

        if args.cli_workdir:
            results["cli"] = cli_route(args.cli_minutes, data, workdir=args.cli_workdir,
                                       extra=tuple(args.cli_args.split()))
        else:
            with tempfile.TemporaryDirectory(prefix="bench_isbi_cli_") as tmp:
                results["cli"] = cli_route(args.cli_minutes, data, workdir=Path(tmp),
                                           extra=tuple(args.cli_args.split()))
        save(results)
    print("\nsummary (ISBI 2012 validation slices 20-24):")
    for preset, r in results["isbi"].items():
        if "error" in r:
            print(f"  {preset:6s} diverged: {r['error']}")
            continue
        f = r["final"]
        print(f"  {preset:6s} {r['train_s']:6.0f} s, {r['steps']} steps: Rand error "
              f"{f['rand_error']:.4f} (best threshold {f['rand_error_best']:.4f}), pixel error "
              f"{f['pixel_error']:.4f}")
    if "random_forest" in results:
        rf = results["random_forest"]
        print(f"  random forest ({rf['total_s']:.0f} s): Rand error {rf['rand_error']:.4f} "
              f"(best threshold {rf['rand_error_best']:.4f}), pixel error "
              f"{rf['pixel_error']:.4f}")
    if "cli" in results:
        c = results["cli"]
        threshold = (c["postprocess"] or {}).get("threshold")
        recipe = " ".join(c.get("train_args", ())) or "defaults"
        print(f"  CLI {recipe} ({c['train_wall_s']:.0f} s wall, {c['steps']} steps, stored "
              f"threshold {threshold}): Rand error {c['mean']['rand_error']:.4f} (target <= "
              f"0.045), pixel error {c['mean']['pixel_error']:.4f}"
              + (f"; stored tta, one pass (--no-tta): {c['mean_one_pass']['rand_error']:.4f}"
                 if c.get("mean_one_pass") else "")
              + (f"; without the confident cores (--seeds 0): "
                 f"{c['mean_no_seeds']['rand_error']:.4f}" if c.get("mean_no_seeds") else ""))
    print("  paper (U-Net, ISBI 2012 test set, GPU): Rand error 0.0382, pixel error 0.0611")
    save(results)


if __name__ == "__main__":
    main()
