"""Write ``benchmarks/splits.json``, the fixed split by id of every data set the benchmarks use.

Run once; the JSON file is the truth and is committed. Re-running reproduces it byte for byte
(a seeded, stratified draw), so a changed file in a diff means a changed split, which must not
happen: test images are scored once per change and never used to choose anything.

DSB 2018 (564 images: ``shared/data/dsb2018`` 100 + ``shared/data/dsb2018_more`` 464):

- test: 100 images, all from ``dsb2018_more``, drawn within strata of (colour, bright
  background, image shape) so that colour / H&E, gray bright-field and every size are in it in
  their share. No test image is in ``dsb2018/``, so "train on the shared 100 images" stays a
  training on non-test images.
- validation: the 20 images ``bench_dsb.py`` held out before (they decided many choices) + 60
  more from ``dsb2018_more``, drawn the same way. Every choice (recipe, thresholds, cores,
  flips, rates) is made here.
- train: the rest (80 of ``dsb2018/`` + 304 of ``dsb2018_more``).

ISBI 2012 (30 slices of which 25 have public labels): train 00-19, validation 20-24, no test
(the challenge's test labels are not public; figures on 20-24 are validation figures).

Volumes: GoNuclear crop 1135 trains, 1136 is held out; QCANet 8-cell trains, 16-cell is held
out; the PlantSeg ovule cells volume is a single volume (its planes are annotated sparsely and
the rest of it scored).

    python benchmarks/make_splits.py            # check the file against the draw
    python benchmarks/make_splits.py --write    # write it (only when a data set is added)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SPLITS = Path(__file__).resolve().parent / "splits.json"


def image_kind(path: Path) -> tuple:
    """(colour, bright background, shape): the strata of the draw."""
    import imageio.v3 as iio

    a = iio.imread(path)[..., :3]
    colour = not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2]))
    g = a.astype(np.float32).mean(-1)
    lo, hi = np.percentile(g, [1, 99.8])
    bright = bool((np.median(g) - lo) / max(hi - lo, 1e-6) > 0.5)
    return colour, bright, tuple(a.shape[:2])


def stratified(ids_by_stratum: dict, counts: dict, *, seed: int) -> dict:
    """Draw ``counts[name]`` ids per part, spread over the strata in proportion (largest
    remainder), each stratum's ids in a seeded order."""
    total = sum(len(v) for v in ids_by_stratum.values())
    rng = np.random.default_rng(seed)
    keys = sorted(ids_by_stratum)
    pools = {k: [ids_by_stratum[k][i] for i in rng.permutation(len(ids_by_stratum[k]))]
             for k in keys}
    parts = {}
    for name, n in counts.items():
        share = {k: n * len(ids_by_stratum[k]) / total for k in keys}
        take = {k: int(share[k]) for k in keys}
        left = n - sum(take.values())
        for k in sorted(keys, key=lambda k: (-(share[k] - take[k]), k))[:left]:
            take[k] += 1
        parts[name] = sorted(i for k in keys for i in pools[k][: take[k]])
        pools = {k: pools[k][take[k]:] for k in keys}
    parts["rest"] = sorted(i for k in keys for i in pools[k])
    return parts


def old_heldout(ids) -> list[str]:
    """The 20 images bench_dsb.py held out before (80/20, a seeded permutation, seed 0)."""
    ids = sorted(ids)
    order = np.random.default_rng(0).permutation(len(ids))
    return sorted(ids[i] for i in order[round(0.8 * len(ids)):])


def dsb_split() -> dict:
    first = sorted(p.stem for p in (DATA / "dsb2018" / "images").glob("*.png"))
    more = sorted(p.stem for p in (DATA / "dsb2018_more" / "images").glob("*.png"))
    strata: dict = {}
    for i in more:
        strata.setdefault(image_kind(DATA / "dsb2018_more" / "images" / f"{i}.png"), []).append(i)
    parts = stratified(strata, {"test": 100, "validation": 60}, seed=2018)
    held = old_heldout(first)
    colour = {i: image_kind(DATA / f / "images" / f"{i}.png")[0]
              for f, group in (("dsb2018", first), ("dsb2018_more", more)) for i in group}
    split = {
        "train": sorted([i for i in first if i not in held] + parts["rest"]),
        "validation": sorted(held + parts["validation"]),
        "test": parts["test"],
    }
    return {
        "about": "DSB 2018 stage1_train (BBBC038), ids = file stems in shared/data/dsb2018 and "
                 "shared/data/dsb2018_more; made by benchmarks/make_splits.py",
        "folders": ["dsb2018", "dsb2018_more"],
        **split,
        "colour": sorted(i for i in colour if colour[i]),
    }


def make() -> dict:
    return {
        "dsb2018": dsb_split(),
        "isbi2012": {
            "about": "ISBI 2012 EM slices 00-24 of shared/data/isbi2012 (public labels); no test "
                     "part: figures on 20-24 are validation figures",
            "train": [f"{i:02d}" for i in range(20)],
            "validation": [f"{i:02d}" for i in range(20, 25)],
            "test": [],
        },
        "volumes3d": {
            "about": "shared/data/volumes3d; one crop trains, another of the same kind is held "
                     "out; plantseg_ovule_cells is one volume, annotated on a few planes",
            "train": ["gonuclear_ovule_nuclei_1135", "qcanet_embryo_nuclei_8cell"],
            "validation": ["plantseg_ovule_cells"],
            "test": ["gonuclear_ovule_nuclei_1136", "qcanet_embryo_nuclei_16cell"],
        },
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    text = json.dumps(make(), indent=1) + "\n"
    if args.write:
        SPLITS.write_text(text)
        print(f"wrote {SPLITS} (sha256 {hashlib.sha256(text.encode()).hexdigest()[:12]})")
        return 0
    same = SPLITS.is_file() and SPLITS.read_text() == text
    print("splits.json matches the draw" if same else "splits.json differs from the draw")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
