"""Train the shipped ``nuclei`` model and write it with its model card into the package.

``napari-unet train --gray`` with the command line's defaults for ``--time-limit`` seconds on
the training split of ``benchmarks/splits.json`` (384 DSB 2018 images), as a user would; then
``benchmarks/bench_dsb.py --model … --ship`` writes ``src/napari_unet/models/nuclei.safetensors``
(float16 weights, the post-processing the training chose on its validation bands) and
``nuclei.md`` (bioimage.io fields and the figures of that very file on the 100 test images,
through ``napari-unet predict``).

    python scripts/train_shipped_model.py --time-limit 3600
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_dsb import main as bench_dsb  # noqa: E402
from bench_peers import train_ours, write_set  # noqa: E402
from dsb_split import dsb_ids  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--time-limit", type=float, default=3600, help="wall-clock training seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "ship",
                   help="folder for the training images and the trained model")
    args = p.parse_args(argv)
    train_ids, _, _ = dsb_ids("train", "test")
    write_set(train_ids, args.work / "train")
    ours = train_ours(args.work / "train", args.work / "ours", args.time_limit, args.seed)
    trained_by = (f"python scripts/train_shipped_model.py --time-limit {args.time_limit:g} "
                  f"--seed {args.seed} (napari-unet train --gray --time-limit "
                  f"{args.time_limit:g} --seed {args.seed} on the {len(train_ids)} training "
                  "images of benchmarks/splits.json)")
    return bench_dsb(["--model", ours["model"], "--train-set", "train", "--eval", "test",
                      "--ship", "--no-eval", "--trained-by", trained_by])


if __name__ == "__main__":
    raise SystemExit(main())
