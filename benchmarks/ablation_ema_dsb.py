"""Ablation: an exponential moving average (EMA) of the weights, paired with the raw weights of
the same DSB 2018 training (not in the library: measured, not adopted; BENCHMARKS.md, DSB
2018, tried and not adopted).

One training of the CPU recipe on the DSB 2018 training split (``bench_dsb.py``'s ``train``, the
same budget, seed and settings as its 15-minute command), with the average
``ema ← d·ema + (1 − d)·weights`` (``d = min(decay, (1 + step) / (10 + step))``) kept after
every step. Both weight sets are written to ``--out``: ``raw.safetensors`` (exactly what
``bench_dsb.py`` would have trained, post-processing chosen at the end of the run) and
``ema.safetensors`` (the averaged weights, post-processing chosen again on the same validation
bands). Score them with the same command, e.g.

    python benchmarks/ablation_ema_dsb.py --out /tmp/ema --time-limit 900 --decay 0.999
    python benchmarks/bench_dsb.py --model /tmp/ema/raw.safetensors --time-limit 0 --also-tta
    python benchmarks/bench_dsb.py --model /tmp/ema/ema.safetensors --time-limit 0 --also-tta
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_dsb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the two model files")
    p.add_argument("--time-limit", type=float, default=900, help="wall-clock training seconds")
    p.add_argument("--decay", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not 0 < args.decay < 1:
        p.error(f"--decay: expected a number in (0, 1), got {args.decay}")

    import torch

    from napari_unet.core.training import trainer as train_mod

    plain_step = train_mod.Trainer.train_step
    ema: list = []

    def step_with_average(self, sampler):
        out = plain_step(self, sampler)
        params = [q.detach() for q in self.model.parameters()]
        if not ema:
            ema.extend(q.clone() for q in params)
        d = min(args.decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1 - d)
        return out

    train_mod.Trainer.train_step = step_with_average
    # bench_dsb's 15-minute recipe (its BENCHMARKS command), as train() reads its options
    recipe = types.SimpleNamespace(
        device="auto", steps=None, time_limit=args.time_limit, classes=2, cpu_bf16="auto",
        seed=args.seed, validate_every=1000, depth=3, tile=156, base_channels=None,
        batch_size=2, lr=2e-3, dropout=0.0, invert=None, init=None, speed=0)
    train_ids, _, _ = bench_dsb.dsb_ids("dsb2018-train", "validation")
    pairs = bench_dsb.load(train_ids, "gray")
    trainer, result = bench_dsb.train(recipe, pairs, lambda m: print(m, file=sys.stderr))
    print(result)
    args.out.mkdir(parents=True, exist_ok=True)
    trainer.save(args.out / "raw.safetensors")
    with torch.no_grad():
        for q, e in zip(trainer.model.parameters(), ema, strict=True):
            q.copy_(e)
    trainer.save(args.out / "ema_unchosen.safetensors")
    bench_dsb.rechoose(args.out / "ema_unchosen.safetensors", pairs, args.out / "ema.safetensors")
    print(f"wrote {args.out / 'raw.safetensors'} and {args.out / 'ema.safetensors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
