"""3D prediction benchmarks: tiling overhead vs one pass, and peak memory of block-wise zarr
prediction as the volume grows.

Model: ``UNet(ndim=3, depth=3, base_channels=8)`` by default (the 3D U-Net's depth, a CPU
width; ``--base``/``--depth``/``--pool`` change it), valid padding, random weights (speed does
not depend on them), random data. Everything runs with torch on all usable CPU cores.

Usage::

    python benchmarks/bench_3d_predict.py overhead --size 128
    python benchmarks/bench_3d_predict.py scale --sizes 128 256 512
    python benchmarks/bench_3d_predict.py all --size 64 --sizes 48 64 --base 4 --depth 2  # quick

``overhead``: tiled prediction (automatic tiles, or ``--tile D H W``) vs one untiled pass over
the mirror-padded whole volume, same data, same process; prints the ratio and the largest
difference (the tiling invariance: ~1e-6 in float32).
``scale``: one subprocess per size runs zarr in → zarr out (probabilities + labels, 3D blocks
of ``--block`` voxels, the cross-block label merge) and reports the wall time and the child's
peak RSS (``ru_maxrss``) and peak traced Python allocations (``tracemalloc``, numpy included);
the input zarr is written by another subprocess first so its memory is not counted. Peak
memory should stay flat with the volume (it follows the block and the tile).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np


def _model(base: int, depth: int, pool: str | None):
    import torch

    from napari_unet.core.device import configure_cpu_threads
    from napari_unet.core.model import UNet

    configure_cpu_threads()
    torch.manual_seed(0)
    pool_arg = None if pool is None else json.loads(pool)
    return UNet(base_channels=base, depth=depth, ndim=3, pool=pool_arg).eval()


def overhead(size: int, base: int, depth: int, pool: str | None, tile=None) -> dict:
    import torch

    from napari_unet.core.predict import auto_tile_shape, predict_tiled

    net = _model(base, depth, pool)
    vol = np.random.default_rng(0).random((size,) * 3, dtype=np.float32)
    tile = tuple(tile) if tile else auto_tile_shape(net, vol.shape)
    predict_tiled(net, vol[:32, :32, :32])  # warm-up (automatic tile)
    t0 = time.perf_counter()
    tiled = predict_tiled(net, vol, tile_shape=tile)
    t_tiled = time.perf_counter() - t0
    ms = net.margins
    ins = net.valid_input_shape(tuple(size + 2 * m for m in ms))
    t0 = time.perf_counter()
    pad = np.pad(vol, [(m, i - size - m) for m, i in zip(ms, ins, strict=True)], mode="reflect")
    with torch.inference_mode():
        ref = torch.softmax(net(torch.from_numpy(pad)[None, None]), 1)[0].numpy()
    ref = ref[:, :size, :size, :size]
    t_one = time.perf_counter() - t0
    out = {
        "size": size, "base_channels": base, "depth": depth, "pool": pool, "tile": list(tile),
        "untiled_input": list(ins), "tiled_s": round(t_tiled, 2), "untiled_s": round(t_one, 2),
        "ratio": round(t_tiled / t_one, 3), "max_abs_diff": float(np.abs(ref - tiled).max()),
        "tiled_mvox_s": round(size**3 / t_tiled / 1e6, 3),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }  # fmt: skip
    print(json.dumps(out), flush=True)
    return out


def _make_input(path: str, size: int, chunk: int = 64) -> None:
    import zarr

    arr = zarr.open_array(path, mode="w", shape=(size,) * 3, chunks=(chunk,) * 3, dtype="u2")
    rng = np.random.default_rng(size)
    for z in range(0, size, chunk):  # slab by slab: the writer's memory stays small too
        arr[z : z + chunk] = rng.integers(0, 4096, (min(chunk, size - z), size, size), np.uint16)


def _scale_one(src: str, out: str, base: int, depth: int, pool: str | None, block: int) -> None:
    import tracemalloc

    from napari_unet.core.predict import predict_to_zarr

    net = _model(base, depth, pool)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    predict_to_zarr(net, src, out, block=block,
                    metadata={"normalization": {"method": "percentile", "low": 1, "high": 99.8}})
    dt = time.perf_counter() - t0
    _cur, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": round(dt, 2), "peak_rss_gb": round(rss / 2**20, 3),
                      "rss_after_import_gb": round(rss0 / 2**20, 3),
                      "peak_traced_gb": round(traced / 2**30, 3)}))  # fmt: skip


def scale(sizes: list[int], base: int, depth: int, pool: str | None, block: int) -> list[dict]:
    from bench_predict import run_scale

    return run_scale("bench_3d_predict", sizes, f"{base}, {depth}, {pool!r}, {block}", ndim=3,
                     fields={"block": block})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["overhead", "scale", "all"])
    p.add_argument("--size", type=int, default=128, help="overhead: volume side")
    p.add_argument("--tile", type=int, nargs=3, metavar=("D", "H", "W"),
                   help="overhead: network input tile (default: automatic, from memory)")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    p.add_argument("--base", type=int, default=8, help="base channels")
    p.add_argument("--depth", type=int, default=3, help="poolings (the 3D U-Net: 3)")
    p.add_argument("--pool", help='JSON pool factors per level, e.g. "[[1,2,2],[2,2,2],[2,2,2]]"')
    p.add_argument("--block", type=int, default=128, help="scale: zarr block side (voxels)")
    args = p.parse_args()
    if args.what in ("overhead", "all"):
        r = overhead(args.size, args.base, args.depth, args.pool, args.tile)
        print(f"3D tiling overhead at {args.size}³: {r['ratio']:.2f}× one untiled pass; "
              f"max |tiled - one pass| {r['max_abs_diff']:.1e}; "
              f"{r['tiled_mvox_s']:.3f} Mvoxel/s")  # fmt: skip
    if args.what in ("scale", "all"):
        scale(args.sizes, args.base, args.depth, args.pool, args.block)


if __name__ == "__main__":
    main()
