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

Times are medians over ``--reps`` samples after a warm-up; reference and ours are timed in
alternating rounds of 5 samples (the machine is shared); ratios are reference / ours.
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

# the reference runs as a small server: each line "k" on stdin times k samples and answers one
# JSON line, so that reference and ours can be timed in alternating rounds under the same load
REFERENCE_SCRIPT = r"""
import json, sys, time
import numpy as np
import elasticdeform
folder = sys.argv[1]
image, labels, weights = (np.load(f"{folder}/{n}.npy") for n in ("image", "labels", "weights"))
np.random.seed(0)
run = lambda: elasticdeform.deform_random_grid(
    [image, labels, weights], sigma=10, points=3, order=[3, 0, 0], mode="mirror")
for _ in range(3):
    run()
print(json.dumps({"numpy": np.__version__}), flush=True)
for line in sys.stdin:
    times = []
    for _ in range(int(line)):
        t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
    print(json.dumps(times), flush=True)
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


class Reference:
    """elasticdeform in its own interpreter, timed on request (see REFERENCE_SCRIPT)."""

    def __init__(self, image, labels, weights):
        python = ensure_reference_venv()
        self._folder = tempfile.TemporaryDirectory()
        for name, arr in (("image", image), ("labels", labels), ("weights", weights)):
            np.save(os.path.join(self._folder.name, f"{name}.npy"), arr)
        self._proc = subprocess.Popen(
            [str(python), "-c", REFERENCE_SCRIPT, self._folder.name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.numpy_version = json.loads(self._proc.stdout.readline())["numpy"]

    def times(self, reps: int) -> list[float]:
        self._proc.stdin.write(f"{reps}\n")
        self._proc.stdin.flush()
        return json.loads(self._proc.stdout.readline())

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait()
        self._folder.cleanup()


def run_times(fn, reps: int, warmup: int = 0) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def median_time(fn, reps: int, warmup: int = 3) -> float:
    return statistics.median(run_times(fn, reps, warmup))


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
    runs = {name: (lambda cfg=cfg: augment_batch(x, y, w, config=cfg, generator=gen))
            for name, cfg in cases.items()}
    for fn in runs.values():  # warm every path before timing any
        run_times(fn, 0, warmup=5)
    ref = None if args.no_reference else Reference(image, labels, weights)
    times = {name: [] for name in runs}
    ref_times = []
    rounds = max(1, args.reps // 5)
    for _ in range(rounds):  # alternate reference and ours, 5 samples each per round
        if ref is not None:
            ref_times += ref.times(5)
        for name, fn in runs.items():
            times[name] += run_times(fn, 5)
    ref_ms = None
    if ref is not None:
        ref.close()
        ref_ms = statistics.median(ref_times) * 1e3
        print(f"elasticdeform (numpy {ref.numpy_version}), order=[3, 0, 0], mirror: "
              f"{ref_ms:7.1f} ms/sample")
    per_sample = {}
    for name, ts in times.items():
        per_sample[name] = ms = statistics.median(ts) * 1e3
        ratio = f"  {ref_ms / ms:5.1f}x elasticdeform's throughput" if ref_ms else ""
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
