"""Elastic augmentation speed: napari_unet.core.augment (torch, CPU) vs the ``elasticdeform`` package.

One run measures, on a 572×572 tile (ISBI 2012 image 00 mirrored from 512 to 572, its connected
cells as labels, a float weight map):

1. reference: ``elasticdeform.deform_random_grid([image, labels, weights], sigma=10, points=3,
   order=[3, 0, 0], mode="mirror")`` — run in its own virtual environment
   ``benchmarks/.venv-elasticdeform`` (created on first use with ``numpy<2``, since its wheel is
   built against numpy 1.x) in a subprocess; the data travel as .npy files;
2. ours, same recipe (3×3 lattice, sigma 10 px, mirror borders, one sample): ``elastic_deform``
   semantics through ``augment_batch`` with bilinear and with bicubic image interpolation, and with
   the full default ``AugmentConfig`` (elastic + rotation + flip + shift + scale + gray values);
3. ours on a batch of 16 (per-sample time);
4. one training step (forward + backward + SGD step, batch of one 572 tile) of
   ``UNet(base_channels=16, depth=4)``, and the share of a step spent augmenting its sample.

Usage::

    python benchmarks/bench_augment.py [--reps 20] [--threads N] [--no-reference]

Times are medians over ``--reps`` repetitions after a warm-up; ratios are reference / ours.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_unet.core.augment import AugmentConfig, augment_batch
from napari_unet.core.model import UNet

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-elasticdeform"
DATA = Path("/work/shared/data/isbi2012")
SIDE = 572

REFERENCE_SCRIPT = r"""
import json, sys, time
import numpy as np
import elasticdeform
folder, reps = sys.argv[1], int(sys.argv[2])
image, labels, weights = (np.load(f"{folder}/{n}.npy") for n in ("image", "labels", "weights"))
np.random.seed(0)
run = lambda: elasticdeform.deform_random_grid(
    [image, labels, weights], sigma=10, points=3, order=[3, 0, 0], mode="mirror")
run()
times = []
for _ in range(reps):
    t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
print(json.dumps({"times": times, "numpy": np.__version__,
                  "elasticdeform": getattr(elasticdeform, "__version__", "?")}))
"""


def load_tile() -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """A 572×572 float32 image, int32 instance labels and a float32 weight map."""
    from scipy import ndimage

    try:
        from PIL import Image

        image = np.asarray(Image.open(DATA / "image" / "00.png"), dtype=np.float32) / 255
        cells = np.asarray(Image.open(DATA / "label" / "00.png")) > 127
        source = "ISBI 2012 image 00, mirrored to 572"
    except (OSError, ImportError):
        rng = np.random.default_rng(0)
        image = ndimage.gaussian_filter(rng.random((512, 512)), 3).astype(np.float32)
        cells = image > np.median(image)
        source = "synthetic 512 noise (ISBI data not found), mirrored to 572"
    pad = (SIDE - image.shape[0]) // 2
    image = np.pad(image, pad, mode="reflect")
    labels = ndimage.label(np.pad(cells, pad, mode="reflect"))[0].astype(np.int32)
    dist = ndimage.distance_transform_edt(labels > 0).astype(np.float32)
    weights = (1 + 10 * np.exp(-(dist**2) / (2 * 5.0**2))).astype(np.float32)
    return image, labels, weights, source


def ensure_reference_venv() -> Path:
    """The interpreter of benchmarks/.venv-elasticdeform, created with numpy<2 if missing."""
    python = VENV / "bin" / "python"
    check = [str(python), "-c", "import elasticdeform, numpy"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"creating {VENV} (numpy<2 + elasticdeform) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "numpy<2", "elasticdeform"],
                   check=True)
    return python


def time_reference(image, labels, weights, reps: int) -> dict:
    python = ensure_reference_venv()
    with tempfile.TemporaryDirectory() as folder:
        for name, arr in (("image", image), ("labels", labels), ("weights", weights)):
            np.save(os.path.join(folder, f"{name}.npy"), arr)
        out = subprocess.run([str(python), "-c", REFERENCE_SCRIPT, folder, str(reps)],
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_time(fn, reps: int, warmup: int = 3) -> float:
    for _ in range(warmup):  # also lets the allocator settle on re-using large blocks
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_training_step(reps: int) -> float:
    torch.manual_seed(0)
    model = UNet(in_channels=1, num_classes=2, depth=4, base_channels=16)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.99)
    out_side = model.output_shape((SIDE, SIDE))[0]
    x = torch.rand(1, 1, SIDE, SIDE)
    y = torch.randint(0, 2, (1, out_side, out_side))
    w = torch.rand(1, out_side, out_side)

    def step():
        opt.zero_grad()
        loss = (torch.nn.functional.cross_entropy(model(x), y, reduction="none") * w).mean()
        loss.backward()
        opt.step()

    return median_time(step, reps)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions (median)")
    parser.add_argument("--step-reps", type=int, default=3, help="timed training steps")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own default)")
    parser.add_argument("--no-reference", action="store_true", help="skip elasticdeform")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    image, labels, weights, source = load_tile()
    print(f"data: {source}; tile {image.shape}, {labels.max()} labels")
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads")

    ref_ms = None
    if not args.no_reference:
        ref = time_reference(image, labels, weights, args.reps)
        ref_ms = statistics.median(ref["times"]) * 1e3
        print(f"elasticdeform {ref['elasticdeform']} (numpy {ref['numpy']}), order=[3, 0, 0], "
              f"mirror: {ref_ms:7.1f} ms/sample")

    x = torch.from_numpy(image)[None, None]
    y = torch.from_numpy(labels)[None]
    w = torch.from_numpy(weights)[None]
    gen = torch.Generator().manual_seed(0)
    cases = {
        "ours elastic, bilinear image": AugmentConfig.none(elastic_sigma=10.0),
        "ours elastic, bicubic image": AugmentConfig.none(elastic_sigma=10.0,
                                                          image_interp="bicubic"),
        "ours full default AugmentConfig": AugmentConfig(),
    }
    per_sample = {}
    for cfg in cases.values():  # warm every path before timing any, so the order does not matter
        for _ in range(5):
            augment_batch(x, y, w, config=cfg, generator=gen)
    for name, cfg in cases.items():
        ms = median_time(lambda cfg=cfg: augment_batch(x, y, w, config=cfg, generator=gen),
                         args.reps) * 1e3
        per_sample[name] = ms
        ratio = f"  {ref_ms / ms:5.1f}x faster than elasticdeform" if ref_ms else ""
        print(f"{name:34s}: {ms:7.1f} ms/sample{ratio}")

    n = 16
    xb, yb, wb = (t.expand(n, *t.shape[1:]).contiguous() for t in (x, y, w))
    batch_ms = median_time(lambda: augment_batch(xb, yb, wb, generator=gen),
                           max(3, args.reps // 4)) * 1e3 / n
    print(f"{'ours full default, batch of 16':34s}: {batch_ms:7.1f} ms/sample")

    step_ms = time_training_step(args.step_reps) * 1e3
    aug_ms = per_sample["ours full default AugmentConfig"]
    share = aug_ms / (aug_ms + step_ms)
    print(f"training step UNet(base_channels=16, depth=4), 572 tile: {step_ms:7.1f} ms; "
          f"augmentation share of a step: {100 * share:.1f} %")


if __name__ == "__main__":
    main()
