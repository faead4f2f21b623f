"""Prediction benchmarks: tiling overhead, zarr→zarr scaling (time, peak memory), throughput.

Model: the default CPU width, ``UNet(base_channels=16, depth=4)`` (valid padding, the paper's
architecture at a quarter of its width), random weights (speed does not depend on them), random
image data. Everything runs with torch on all usable CPU cores.

Usage::

    python benchmarks/bench_predict.py overhead --size 4096
    python benchmarks/bench_predict.py scale --sizes 2048 4096 8192
    python benchmarks/bench_predict.py layout --size 1024 [--depths 3 4] [--tta]
    python benchmarks/bench_predict.py all

``overhead``: tiled (automatic tiles) vs one untiled pass over the mirror-padded whole image,
same data, same process; prints the ratio (target ≤ 1.25) and the throughput in Mpixel/s.
``layout``: ``predict_image`` with the weights contiguous against channels-last
(:func:`napari_unet.core.device.cpu_layout`, what ``load_model`` gives on a CPU), alternating
in the same process, per depth; prints the ratio and the largest difference.
``scale``: one subprocess per size runs zarr in → zarr out (probabilities + labels) and reports
wall time and the child's peak RSS (``ru_maxrss``); the input zarr is written by another
subprocess first so its memory is not counted.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PAPER = "paper: < 1 s for a 512×512 image on a 2015 GPU (NVidia Titan, 6 GB), full-width U-Net"


def _model(base: int, depth: int = 4):
    import torch

    from napari_unet.core.device import configure_cpu_threads
    from napari_unet.core.model import UNet

    configure_cpu_threads()
    torch.manual_seed(0)
    return UNet(base_channels=base, depth=depth).eval()


def overhead(size: int, base: int) -> dict:
    import torch

    from napari_unet.core.predict import auto_tile_shape, predict_tiled

    net = _model(base)
    image = np.random.default_rng(0).random((size, size), dtype=np.float32)
    tile = auto_tile_shape(net, image.shape)
    predict_tiled(net, image[:300, :300])  # warm-up
    t0 = time.perf_counter()
    tiled = predict_tiled(net, image)
    t_tiled = time.perf_counter() - t0
    m = net.margin
    ins = net.valid_input_shape((size + 2 * m, size + 2 * m))
    t0 = time.perf_counter()
    pad = np.pad(image, ((m, ins[0] - size - m), (m, ins[1] - size - m)), mode="reflect")
    with torch.inference_mode():
        ref = torch.softmax(net(torch.from_numpy(pad)[None, None]), 1)[0, :, :size, :size].numpy()
    t_one = time.perf_counter() - t0
    diff = float(np.abs(ref - tiled).max())
    out = {
        "size": size, "base_channels": base, "tile": list(tile), "untiled_input": list(ins),
        "tiled_s": round(t_tiled, 2), "untiled_s": round(t_one, 2),
        "ratio": round(t_tiled / t_one, 3), "max_abs_diff": diff,
        "tiled_mpix_s": round(size * size / t_tiled / 1e6, 3),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }  # fmt: skip
    print(json.dumps(out))
    return out


def layout(size: int, base: int, depths, tta: bool, repeats: int = 3) -> list[dict]:
    import statistics

    from napari_unet.core.device import cpu_layout
    from napari_unet.core.predict import predict_image

    image = np.random.default_rng(0).random((size, size), dtype=np.float32)
    rows = []
    for depth in depths:
        net = _model(base, depth)
        times = {False: [], True: []}
        out = {}
        for _ in range(repeats):
            for cl in (False, True):
                cpu_layout(net, channels_last=cl)
                predict_image(net, image[:200, :200], tta=tta)  # warm-up of this layout
                t0 = time.perf_counter()
                out[cl] = predict_image(net, image, tta=tta)
                times[cl].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"size": size, "depth": depth, "base_channels": base, "tta": tta,
               "contiguous_s": round(med[False], 2), "channels_last_s": round(med[True], 2),
               "ratio": round(med[False] / med[True], 3),
               "max_abs_diff": float(np.abs(out[False] - out[True]).max()),
               "channels_last_mpix_s": round(size * size / med[True] / 1e6, 3)}
        print(json.dumps(row))
        rows.append(row)
    return rows


def _make_input(path: str, size: int, chunk: int = 1024) -> None:
    import zarr

    arr = zarr.open_array(path, mode="w", shape=(size, size), chunks=(chunk, chunk), dtype="u2")
    rng = np.random.default_rng(size)
    for y in range(0, size, chunk):
        for x in range(0, size, chunk):
            arr[y : y + chunk, x : x + chunk] = rng.integers(0, 4096, (chunk, chunk), dtype=np.uint16)


def _scale_one(src: str, out: str, base: int, block: int) -> None:
    from napari_unet.core.predict import predict_to_zarr

    net = _model(base)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    predict_to_zarr(net, src, out, block=block)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": round(dt, 2), "peak_rss_gb": round(rss / 2**20, 2),
                      "rss_after_import_gb": round(rss0 / 2**20, 2)}))  # fmt: skip


def run_scale(module: str, sizes: list[int], one_args: str, *, ndim: int,
              fields: dict | None = None) -> list[dict]:
    """For each size, in fresh processes: ``module._make_input(src, size)``, then
    ``module._scale_one(src, out, <one_args>)`` (which prints one JSON line of seconds and
    peak memory); prints each row with its throughput, then every size against the first.
    Shared by this script (2D) and ``bench_3d_predict.py`` (volumes)."""
    sup, unit = ("²", "pixels") if ndim == 2 else ("³", "voxels")
    rate = "mpix_s" if ndim == 2 else "mvox_s"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            src, out = f"{tmp}/in{size}.zarr", f"{tmp}/out{size}.zarr"
            code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                    f"import {module} as b; ")
            subprocess.run([sys.executable, "-c", code + f"b._make_input({src!r}, {size})"],
                           check=True)
            res = subprocess.run([sys.executable, "-c", code +
                                  f"b._scale_one({src!r}, {out!r}, {one_args})"],
                                 check=True, capture_output=True, text=True)  # fmt: skip
            row = {"size": size, **(fields or {}),
                   **json.loads(res.stdout.strip().splitlines()[-1])}
            row[rate] = round(size**ndim / row["seconds"] / 1e6, 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
            subprocess.run(["rm", "-rf", src, out], check=False)
    if len(rows) > 1:
        first = rows[0]
        for r in rows[1:]:
            traced = (f", {r['peak_traced_gb'] / max(first['peak_traced_gb'], 1e-9):.2f}× the "
                      "peak traced allocations" if "peak_traced_gb" in r else "")
            print(f"{r['size']}{sup}: {(r['size'] / first['size']) ** ndim:.0f}× the {unit} of "
                  f"{first['size']}{sup}, {r['seconds'] / first['seconds']:.2f}× the time, "
                  f"{r['peak_rss_gb'] / first['peak_rss_gb']:.2f}× the peak RSS{traced}")
    return rows


def scale(sizes: list[int], base: int, block: int) -> list[dict]:
    return run_scale("bench_predict", sizes, f"{base}, {block}", ndim=2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["overhead", "scale", "layout", "all"])
    p.add_argument("--depths", type=int, nargs="+", default=[3, 4], help="layout: depths")
    p.add_argument("--tta", action="store_true", help="layout: the 8 flips/rotations")
    p.add_argument("--size", type=int, default=4096, help="overhead: image side")
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    p.add_argument("--base", type=int, default=16, help="base channels (default CPU width)")
    p.add_argument("--block", type=int, default=2048, help="scale: zarr block side")
    args = p.parse_args()
    if args.what in ("overhead", "all"):
        r = overhead(args.size, args.base)
        print(f"tiling overhead at {args.size}²: {r['ratio']:.2f}× one untiled pass "
              f"(target ≤ 1.25); throughput {r['tiled_mpix_s']:.3f} Mpixel/s; {PAPER}")  # fmt: skip
    if args.what == "layout":
        for r in layout(args.size, args.base, args.depths, args.tta):
            print(f"depth {r['depth']}, {args.size}²: channels-last {r['ratio']:.2f}× faster "
                  f"than contiguous ({r['contiguous_s']} s -> {r['channels_last_s']} s)")
    if args.what in ("scale", "all"):
        scale(args.sizes, args.base, args.block)


if __name__ == "__main__":
    main()
