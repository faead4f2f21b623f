"""The data ``benchmarks/gpu_check.sh`` trains and scores on, packed to travel to a GPU machine.

A device machine has no network and none of ``shared/data``: :func:`pack_dsb` copies the DSB
2018 files the check needs, as they are, into an ignored folder of the repository
(``.gpu_data`` by default), which the device call names in ``carry``. Which images
(``benchmarks/splits.json`` through ``dsb_split.py``): the training images of
``shared/data/dsb2018`` that are in the split's training part (``dsb2018-train``, 80 images:
no validation image) and the 80 validation images (never a test image). The check trains and
evaluates with ``--gray`` on these files, as the DSB benchmark does: 15.3 MiB of PNG images
and TIFF labels.

    python benchmarks/gpu_pack.py .gpu_data          # what gpu_check.sh --pack runs
    python benchmarks/gpu_pack.py --synthetic DIR    # a tiny synthetic pack in DIR/pack

Layout: ``DIR/{train,validation}/{images,labels}/<id>.<ext>`` and ``DIR/manifest.json`` (the
ids of each part, the colour ids, the commit that packed them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: what a device call may carry: the working tree and the carried paths together
TRAVEL_LIMIT = 64 * 2**20


def pack(dest: str | os.PathLike, parts: Mapping[str, Sequence[str]], *,
         image_path: Callable[[str], Path], label_path: Callable[[str], Path],
         colour: set[str] | frozenset[str] = frozenset(), about: str = "") -> dict:
    """Copy the image and label files of ``parts`` (``{"train": ids, "validation": ids}``)
    into ``dest/<part>/{images,labels}``, named by id. Returns the manifest (also written to
    ``dest/manifest.json``).

    Examples
    --------
    >>> import tempfile
    >>> src = Path(tempfile.mkdtemp())
    >>> _ = (src / "a.png").write_bytes(b"png"), (src / "a_lab.tif").write_bytes(b"tif")
    >>> m = pack(src / "out", {"train": ["a"]}, image_path=lambda i: src / f"{i}.png",
    ...          label_path=lambda i: src / f"{i}_lab.tif")
    >>> m["parts"], sorted(p.name for p in (src / "out" / "train" / "labels").iterdir())
    ({'train': ['a']}, ['a.tif'])
    """
    dest = Path(dest)
    if (dest / "manifest.json").exists():
        raise FileExistsError(f"DIR: {dest} holds a pack already; remove it or pack elsewhere")
    for part, ids in parts.items():
        for kind, path_of in (("images", image_path), ("labels", label_path)):
            (dest / part / kind).mkdir(parents=True, exist_ok=True)
            for i in ids:
                src = Path(path_of(i))
                shutil.copyfile(src, dest / part / kind / f"{i}{src.suffix}")
    manifest = {"about": about, "parts": {k: list(v) for k, v in parts.items()},
                "colour": sorted(set(colour) & {i for v in parts.values() for i in v}),
                "commit": git_commit()}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def pack_dsb(dest: str | os.PathLike) -> dict:
    """:func:`pack` of the check's DSB images from ``shared/data`` (see the module docstring)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from dsb_split import dsb_ids, image_path, label_path

    train, validation, colour = dsb_ids("dsb2018-train", "validation")
    return pack(dest, {"train": train, "validation": validation}, image_path=image_path,
                label_path=label_path, colour=colour,
                about="DSB 2018 (benchmarks/splits.json): train = dsb2018-train, validation = "
                      "the split's validation part")


def synthetic_pack(dest: str | os.PathLike, *, side: int = 96) -> dict:
    """A tiny pack of synthetic cells (2 training, 2 validation images, one of them colour)
    in the layout of :func:`pack`, made through it: the check's DSB part on any machine."""
    import numpy as np

    from napari_unet.commands.files import write_image
    from napari_unet.core.synthetic import synthetic_cells

    raw = Path(dest) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    ids = [f"synthetic{k}" for k in range(4)]
    for k, i in enumerate(ids):
        image, labels = synthetic_cells((side, side), radius=8, seed=k)
        gray = (255 * np.clip(image, 0, 1)).astype(np.uint8)
        write_image(raw / f"{i}.png", np.stack([gray, gray // 2 if k == 3 else gray, gray], -1))
        write_image(raw / f"{i}_labels.tif", labels.astype(np.uint16))
    return pack(Path(dest) / "pack", {"train": ids[:2], "validation": ids[2:]},
                image_path=lambda i: raw / f"{i}.png",
                label_path=lambda i: raw / f"{i}_labels.tif", colour={ids[3]},
                about="synthetic cells (a dry run)")


def git_commit() -> str | None:
    """The commit of the repository's checkout, or None (no git, or not a checkout)."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def travel_bytes(carry: Sequence[str | os.PathLike] = ()) -> int:
    """Bytes a device call would send: the tracked and the untracked-not-ignored files of the
    checkout, plus the ``carry`` paths (relative to the repository root)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, check=True).stdout
    files = [ROOT / f for f in listed.decode().split("\0") if f]
    for path in carry:
        path = ROOT / path
        files += [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return sum(p.stat().st_size for p in files if p.is_file() and not p.is_symlink())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dest", nargs="?", default=".gpu_data",
                   help="folder to write, relative to the repository root (default .gpu_data)")
    p.add_argument("--carry", nargs="*", default=[".whl"],
                   help="other carried paths counted in the travel size (default .whl)")
    p.add_argument("--synthetic", action="store_true",
                   help="a tiny pack of synthetic cells in DEST/pack (a dry run's data)")
    args = p.parse_args(argv)
    if args.synthetic:
        synthetic_pack(args.dest)
        return 0
    dest = ROOT / args.dest
    manifest = pack_dsb(dest)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    carry = [args.dest, *[c for c in args.carry if (ROOT / c).exists()]]
    total = travel_bytes(carry)
    print(f"packed {', '.join(f'{len(v)} {k}' for k, v in manifest['parts'].items())} images "
          f"({len(manifest['colour'])} colour) into {dest}: {size / 2**20:.1f} MiB")
    print(f"a device call carrying {' '.join(carry)} sends {total / 2**20:.1f} MiB of "
          f"{TRAVEL_LIMIT / 2**20:.0f} MiB")
    if total > TRAVEL_LIMIT:
        print("too large for a device call: carry fewer files", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
