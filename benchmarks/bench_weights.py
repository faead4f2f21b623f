"""Border weight map speed: ``border_weight_map`` vs the usual brute force, in the same run.

The brute force is the code most U-Net reimplementations use for the paper's eq. 2: one full
Euclidean distance transform per cell, stacked into a (cells, H, W) float64 array and sorted along
the cells to take the two smallest (about 1.6 GB for 1024² and 200 cells).

Cases (synthetic touching cells from ``napari_unet.core.synthetic``):

1. 1024×1024, 200 cells: brute force once (timed, peak memory by tracemalloc), ours repeated
   (best and median), max |ours - brute| over all pixels, ratio brute / ours;
2. 2048×2048, 1000 cells: ours only (the brute force would need 1000 × 4 M × 8 B = 32 GB) and,
   as the exact cross-check, our scipy path (one cropped distance transform per cell).

Usage::

    python benchmarks/bench_weights.py [--reps 15] [--no-brute]

Times are wall-clock and, because the machine may be shared, also CPU time of this process
(``time.process_time``: both codes are single-threaded, so it is about what an idle machine's
wall clock would show). Memory is the peak of the allocations traced by ``tracemalloc``
during one call (numpy's arrays included).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import tracemalloc

import numpy as np
from scipy import ndimage as ndi

from napari_unet.core.synthetic import synthetic_cells
from napari_unet.core.targets import make_target
from napari_unet.core.weights import border_weight_map
from napari_unet.core.weights.two_nearest import HAVE_NUMBA


def brute_force(labels, *, w0=10.0, sigma=5.0):
    """The usual code: every cell's EDT stacked, sorted, two smallest; inverse-frequency w_c."""
    target, _ = make_target(labels)
    cells = np.where(target == 1, labels, 0)
    ids = np.unique(cells)
    ids = ids[ids != 0]
    distances = np.zeros((len(ids), *labels.shape), dtype=np.float64)
    for i, cell_id in enumerate(ids):
        distances[i] = ndi.distance_transform_edt(cells != cell_id)
    distances.sort(axis=0)
    d1, d2 = distances[0], distances[1]
    border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2)) * (target == 0)
    fg = target == 1
    wc = np.where(fg, fg.size / (2 * fg.sum()), fg.size / (2 * (~fg).sum()))
    return (wc + border).astype(np.float32)


def timed(func, *args, **kwargs):
    """(result, wall seconds, CPU seconds of this process)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = func(*args, **kwargs)
    return out, time.perf_counter() - start, time.process_time() - cpu


def peak_memory(func, *args, **kwargs):
    tracemalloc.start()
    tracemalloc.reset_peak()
    func(*args, **kwargs)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def repeat(func, reps, *args, **kwargs):
    """Best and median of wall and CPU times over ``reps`` calls after a warm-up."""
    func(*args, **kwargs)  # warm-up (numba compiles on the first call, or loads its cache)
    runs = [timed(func, *args, **kwargs)[1:] for _ in range(reps)]
    wall, cpu = [r[0] for r in runs], [r[1] for r in runs]
    return min(wall), statistics.median(wall), min(cpu), statistics.median(cpu)


def report(name, times, mem, pixels):
    wall, wall_med, cpu, cpu_med = times
    print(
        f"  {name}: wall best {wall * 1e3:6.1f} ms median {wall_med * 1e3:6.1f} ms | "
        f"CPU best {cpu * 1e3:6.1f} ms median {cpu_med * 1e3:6.1f} ms | "
        f"peak {mem / 2**20:6.1f} MiB ({mem / pixels:.0f} B/pixel)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15, help="repetitions of ours (default 15)")
    parser.add_argument("--no-brute", action="store_true", help="skip the brute force")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; numba: {HAVE_NUMBA}; "
        f"numpy {np.__version__}"
    )

    _, labels = synthetic_cells((1024, 1024), n_cells=200, radius=33, seed=0)
    n_cells = len(np.unique(labels)) - 1
    print(f"\n1024x1024, {n_cells} touching cells ({(labels > 0).mean():.0%} cell pixels)")
    times = repeat(border_weight_map, args.reps, labels)
    report("ours", times, peak_memory(border_weight_map, labels), labels.size)
    if not args.no_brute:
        tracemalloc.start()
        ref, t_ref, cpu_ref = timed(brute_force, labels)
        ref_mem = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        err = float(np.abs(border_weight_map(labels) - ref).max())
        print(f"  brute force: wall {t_ref:6.2f} s | CPU {cpu_ref:6.2f} s | "
              f"peak {ref_mem / 2**20:6.1f} MiB")
        print(f"  max |ours - brute| = {err:.2e} (tolerance 1e-3 * w0 = 1e-2)")
        print(f"  ratio brute / ours: wall {t_ref / times[0]:.0f}x (best), "
              f"{t_ref / times[1]:.0f}x (median); CPU {cpu_ref / times[2]:.0f}x (best), "
              f"{cpu_ref / times[3]:.0f}x (median)")

    _, labels = synthetic_cells((2048, 2048), n_cells=1000, radius=29, seed=1)
    n_cells = len(np.unique(labels)) - 1
    print(f"\n2048x2048, {n_cells} touching cells ({(labels > 0).mean():.0%} cell pixels)")
    times = repeat(border_weight_map, max(3, args.reps // 3), labels)
    report("ours", times, peak_memory(border_weight_map, labels), labels.size)
    exact, t_exact, _ = timed(border_weight_map, labels, method="scipy")
    err = float(np.abs(border_weight_map(labels) - exact).max())
    print(f"  scipy path (cropped EDT per cell): {t_exact:.2f} s; max |difference| = {err:.2e}")


if __name__ == "__main__":
    main()
