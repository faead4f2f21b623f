"""Train the shipped ``nuclei`` model and write it with its model card into the package.

Runs ``benchmarks/bench_dsb.py --ship`` (the DSB2018 split, the chosen recipe, a long budget):
``src/napari_unet/models/nuclei.safetensors`` (float16 weights) and ``nuclei.md`` (bioimage.io
fields and the figures of that very file on the held-out images, through ``napari-unet
predict``). Extra arguments go to the benchmark, e.g. ``--classes 3`` or ``--channels rgb``.

    python scripts/train_shipped_model.py --time-limit 3600
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_dsb import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--time-limit" not in args:
        args += ["--time-limit", "3600"]
    raise SystemExit(main(["--ship", *args]))
