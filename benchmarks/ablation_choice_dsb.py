"""Ablation: how well the validation band predicts the held-out images when choosing the
post-processing of trained DSB 2018 models (BENCHMARKS.md, DSB 2018: fixed settings were
not adopted; the threshold tolerance of the library's choice was).

For each model file (trained by ``bench_dsb.py`` on its training split), the same fixed
post-processing settings are scored twice, both with the model's stored flips/rotations:

- on the validation bands of the training split, as the end of training scores them (each
  band predicted with its context, :func:`napari_unet.core.training.choice.choose_postprocess`'s
  objective: instance F1 at IoU 0.5 minus the Rand error; its parts are printed too);
- on the 80 validation images of the split (mean over the images of instance F1 at IoU
  0.5).

It prints, per model, the held-out F1 of the stored (band-chosen) post-processing, the band
and held-out scores of every fixed setting, and then per setting the mean over the models
and how many of them reach 0.85; ``--json`` keeps it all. About 3 minutes per model on two
cores.

It also scores what this code's :func:`napari_unet.core.training.choice.choose_postprocess`
search chooses on the same band probabilities (``library``): with ``--cache DIR`` the band
and held-out probabilities are kept, so that two versions of the library can be compared on
the very same probabilities (run it once from each, e.g. with ``PYTHONPATH`` pointing at a
git worktree of the older one); ``--no-grid`` skips the fixed settings (seconds per model).

    python benchmarks/ablation_choice_dsb.py MODEL.safetensors [MODEL ...] [--json out.json]
        [--cache DIR] [--no-grid]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_dsb

#: threshold, confident-core level, minimum size, regrowth: around the library's defaults and
#: the settings the bands chose for the recipe's models
GRID = [(t, s, m, r) for t, s, m, r in itertools.product(
    (0.5, 0.55, 0.6, 0.65, 0.7), (0.7, 0.8, 0.9), (10, 25, 50), (0, 1)) if s > t]


def _key(setting) -> str:
    return "{},{},{},{}".format(*setting)


def _probabilities(path: Path, train, test, cache: Path | None):
    """(metadata, band rows, held-out probabilities) of one model, read from ``cache`` when
    an earlier run kept them there."""
    import pickle

    from napari_unet.core.predict import segment
    from napari_unet.core.training import validation as V

    kept = None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        kept = cache / (str(path.resolve()).strip("/").replace("/", "_") + ".pkl")
        if kept.is_file():
            with open(kept, "rb") as f:
                return pickle.load(f)
    # the bands the training held out
    model, meta, trainer, prepared, regions = bench_dsb.validation_bands(path, train)
    model.eval()
    tta = bool((meta.get("postprocess") or {}).get("tta", True))
    with V.in_eval(trainer.model):
        rows = V.predicted_regions(trainer.model, prepared, regions, trainer.tile_shape, tta=tta,
                            context=V.CONTEXT)
    probs = [segment(model, img, metadata=meta, tta=tta)[0] for _, img, _, _, _ in test]
    if kept is not None:
        with open(kept, "wb") as f:
            pickle.dump((meta, rows, probs), f)
    return meta, rows, probs


def score_model(path: Path, train, test, *, cache: Path | None = None,
                grid: bool = True) -> dict:
    """Band objective (with F1 and Rand error) and held-out mean F1 of every GRID setting
    (unless not ``grid``), of the stored one and of this library's choice, for one model."""
    from napari_unet.core.metrics import instance_matching
    from napari_unet.core.predict import PostprocessSettings
    from napari_unet.core.training import choice
    from napari_unet.core.training import validation as V

    meta, rows, probs = _probabilities(path, train, test, cache)
    stored = PostprocessSettings.from_metadata(meta)

    @functools.cache  # the library's choice is often the stored one, or a grid setting
    def held_out(settings) -> float:
        return float(np.mean([instance_matching(settings.labels(p), lab, threshold=0.5)["f1"]
                              for p, (_, _, _, lab, _) in zip(probs, test, strict=True)]))

    def parts(s: dict) -> dict:
        return {"objective": V.objective(s), "f1": s["instance_f1"],
                "rand_error": s["rand_error"]}

    def band(settings) -> dict:
        return parts(V.region_scores(rows, settings))

    out = {"stored": str(stored), "stored_band": band(stored),
           "stored_held_out": held_out(stored), "settings": {}}
    chosen, chosen_scores = choice.choose_settings(rows)
    out.update(library=str(chosen), library_band=parts(chosen_scores),
               library_held_out=held_out(chosen))
    for t, s, m, r in GRID if grid else ():
        trial = stored.replace(threshold=t, seeds=s, min_size=m, regrow=r, watershed=False)
        out["settings"][_key((t, s, m, r))] = {"band": band(trial), "held_out": held_out(trial)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path, help="model files trained by bench_dsb.py")
    p.add_argument("--json", type=Path, help="write every score here")
    p.add_argument("--cache", type=Path, help="keep (or reuse) each model's probabilities here")
    p.add_argument("--no-grid", action="store_true", help="skip the fixed settings")
    args = p.parse_args(argv)
    missing = [str(m) for m in args.models if not m.is_file()]
    if missing:
        p.error(f"models: no such file(s): {', '.join(missing)}")
    # models trained by bench_dsb.py on its default set, scored on the validation images
    train_ids, test_ids, _ = bench_dsb.dsb_ids("dsb2018-train", "validation")
    train = bench_dsb.load(train_ids, "gray")
    test = bench_dsb.load(test_ids, "gray")
    report = {}
    for path in args.models:
        r = report[str(path)] = score_model(path, train, test, cache=args.cache,
                                            grid=not args.no_grid)
        print(f"{path}: stored {r['stored']}: held-out F1 {r['stored_held_out']:.4f}; this "
              f"library's choice {r['library']}: band {r['library_band']['objective']:.4f}, "
              f"held-out {r['library_held_out']:.4f}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
        if args.no_grid:
            continue
        best = max(r["settings"], key=lambda k: r["settings"][k]["band"]["objective"])
        a, b = r["settings"]["0.5,0.7,25,1"], r["settings"]["0.6,0.8,25,1"]
        print(f"{path}: stored {r['stored']}: held-out F1 {r['stored_held_out']:.4f}; band's "
              f"best {best}: held-out {r['settings'][best]['held_out']:.4f}; threshold 0.5 -> "
              f"0.6 (cores 0.7 -> 0.8, min size 25, regrow 1): band F1 "
              f"{b['band']['f1'] - a['band']['f1']:+.4f}, objective "
              f"{b['band']['objective'] - a['band']['objective']:+.4f}, held-out F1 "
              f"{b['held_out'] - a['held_out']:+.4f}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
    n = len(report)
    stored = [r["stored_held_out"] for r in report.values()]
    print(f"\n{n} model(s); held-out mean F1, mean over the models (models >= 0.85):")
    print(f"  stored (chosen on the band)  {np.mean(stored):.4f} ({sum(f >= 0.85 for f in stored)})")
    lib = [r["library_held_out"] for r in report.values()]
    print(f"  this library's choice        {np.mean(lib):.4f} ({sum(f >= 0.85 for f in lib)})")
    if args.no_grid:
        return 0
    means = {k: [r["settings"][k]["held_out"] for r in report.values()] for k in map(_key, GRID)}
    for k in sorted(means, key=lambda k: -np.mean(means[k]))[:6]:
        f = means[k]
        print(f"  fixed {k:18s}      {np.mean(f):.4f} ({sum(x >= 0.85 for x in f)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
