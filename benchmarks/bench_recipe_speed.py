"""Training speed of the CPU recipe against other network/tile/batch settings, same run.

One :class:`~napari_unet.core.training.Trainer` per setting on the DSB 2018 training split (80
images, gray, as ``bench_dsb.py`` trains), each with the layout and threads the trainer picks
itself; the settings are timed in alternating blocks of ``--steps`` steps (``--rounds``
rounds), so that a load change hits them alike. Reported per setting: the median step, steps
per minute, and the *supervised pixels per second* (batch × output side²: how many labelled
pixels the loss sees), each as a ratio to the first setting (the CPU recipe by default).

    python benchmarks/bench_recipe_speed.py                       # recipe vs larger tiles, depth 4
    python benchmarks/bench_recipe_speed.py --settings 3,156,2 3,220,1

A setting is ``depth,tile,batch`` (tile: the network's input side, valid for that depth).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_dsb import dsb_ids, load

DEFAULT_SETTINGS = ("3,156,2", "3,220,1", "3,252,1", "3,188,2", "4,252,1", "4,284,1")


def parse_setting(text: str) -> tuple[int, int, int]:
    try:
        depth, tile, batch = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected depth,tile,batch (three integers, e.g. 3,156,2), got {text!r}") from None
    return depth, tile, batch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", nargs="+", type=parse_setting,
                   default=[parse_setting(s) for s in DEFAULT_SETTINGS],
                   help="depth,tile,batch per setting; the first is the reference")
    p.add_argument("--steps", type=int, default=15, help="steps per block")
    p.add_argument("--rounds", type=int, default=3, help="blocks per setting, alternating")
    p.add_argument("--json", type=Path, help="write the report here")
    args = p.parse_args(argv)

    from napari_unet.core.device import configure_cpu_threads
    from napari_unet.core.training import Trainer, TrainingPair, gui_defaults

    recipe = gui_defaults("cpu")  # the CPU recipe of the GUI and the CLI; only its shape changes

    train_ids, _, _ = dsb_ids("dsb2018-train", "validation")
    pairs = [TrainingPair(img, lab, channel_axis=axis)
             for _, img, axis, lab, _ in load(train_ids, "gray")]
    configure_cpu_threads(None)
    runs = {}
    for depth, tile, batch in args.settings:
        cfg = dataclasses.replace(recipe, depth=depth, tile=tile, batch_size=batch,
                                  steps=10**9, time_limit=None)
        trainer = Trainer(pairs, cfg)
        sampler = trainer.make_sampler()
        for _ in range(2):  # warm-up
            trainer.train_step(sampler)
        runs[(depth, tile, batch)] = (trainer, sampler, [])
    for _ in range(args.rounds):
        for trainer, sampler, times in runs.values():
            for _ in range(args.steps):
                t0 = time.perf_counter()
                trainer.train_step(sampler)
                times.append(time.perf_counter() - t0)
    rows, ref = [], None
    for (depth, tile, batch), (trainer, _, times) in runs.items():
        med = statistics.median(times)
        px = batch * trainer.out_tile ** 2 / med
        ref = ref or (med, px)
        rows.append({"depth": depth, "tile": tile, "out": trainer.out_tile, "batch": batch,
                     "step_ms": round(1000 * med, 1), "steps_per_min": round(60 / med),
                     "supervised_px_per_s": round(px), "steps_ratio": round(ref[0] / med, 2),
                     "px_ratio": round(px / ref[1], 2)})
    print("depth tile->out batch | step ms | steps/min (ratio) | supervised px/s (ratio)")
    for r in rows:
        print(f"{r['depth']:>5} {r['tile']:>4}->{r['out']:<4} {r['batch']:>4} | "
              f"{r['step_ms']:7.1f} | {r['steps_per_min']:5d} ({r['steps_ratio']:.2f}x) | "
              f"{r['supervised_px_per_s']:7d} ({r['px_ratio']:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
