"""Which test-time transforms are worth their cost: F1@0.5 of one model on DSB validation images
for subsets of the 8 flips and turns of the plane, each averaged before the model's stored
post-processing.

Every image is predicted once per transform (:func:`napari_unet.core.predict.passes.dihedral`,
the prediction turned back), and each subset averages its members' probabilities, so all
subsets are scored on the same forward passes. Validation images only (never the test split):
``--images validation`` (the split's 80) or ``colour`` (every colour image that a
``dsb2018-train`` training never saw: the validation split's and the training split's
``dsb2018_more`` ones).

    python benchmarks/bench_dsb.py --time-limit 0 --steps 14000 --save M.safetensors --no-eval
    python benchmarks/bench_tta.py --model M.safetensors
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_dsb import load  # noqa: E402
from dsb_split import dsb_ids, scores, split  # noqa: E402

#: index sets of :func:`dihedral` (k % 4 quarter turns, k >= 4 a flip of x first)
SUBSETS = {"one pass": (0,), "+ flip": (0, 4), "+ half-turn": (0, 2), "+ transpose": (0, 5),
           "4 flips": (0, 2, 4, 6), "4 turns": (0, 1, 2, 3), "all 8": tuple(range(8))}


def image_ids(which: str) -> list[str]:
    """The validation split's ids, or the colour images no ``dsb2018-train`` run trained on."""
    first, validation, colour = dsb_ids("dsb2018-train", "validation")
    if which == "validation":
        return validation
    test = set(split()["test"])
    return sorted(i for i in colour if i not in set(first) and i not in test)


def main(argv=None) -> int:
    import torch

    from napari_unet.core.io import load_model
    from napari_unet.core.metrics import instance_matching
    from napari_unet.core.predict import predict_image
    from napari_unet.core.predict.passes import dihedral
    from napari_unet.core.predict.postprocess import PostprocessSettings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--images", default="validation", choices=("validation", "colour"))
    p.add_argument("--colour", default="mean", choices=("mean", "stain"),
                   help="how colour images are made gray (as the model was trained)")
    p.add_argument("--max-images", type=int, help="only the first N images")
    p.add_argument("--json", type=Path, help="write the report here")
    args = p.parse_args(argv)
    model, meta = load_model(args.model)
    model.eval()
    settings = PostprocessSettings.from_metadata(meta)
    ids = image_ids(args.images)[: args.max_images]
    rows = {name: {"all": [], "gray": [], "colour": []} for name in SUBSETS}
    seconds = []
    for _, image, _, labels, is_colour in load(ids, "gray", args.colour):
        probs = []
        for k in range(8):
            turned = dihedral(torch.from_numpy(image), k).numpy().copy()
            t0 = time.perf_counter()
            prob = predict_image(model, turned, metadata=meta)
            seconds.append((time.perf_counter() - t0) / (image.size / 1e6))
            probs.append(dihedral(torch.from_numpy(prob), k, inverse=True).numpy())
        for name, ks in SUBSETS.items():
            labels_pred = settings.labels(np.mean([probs[k] for k in ks], axis=0))
            m = instance_matching(labels_pred, labels)
            rows[name]["all"].append(m)
            rows[name]["colour" if is_colour else "gray"].append(m)
    report = {"model": str(args.model), "images": args.images, "n": len(ids),
              "s_per_mpixel_one_pass_median": round(statistics.median(seconds), 3)}
    for name, parts in rows.items():  # the same scorer as bench_dsb and bench_peers
        report[name] = {"passes": len(SUBSETS[name]),
                        **{part: scores(r)["f1_mean_per_image"] if r else None
                           for part, r in parts.items()}}
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
