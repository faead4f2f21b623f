"""Step overhead: our full training step vs a bare PyTorch loop over the same network and tile.

Ours: draw a patch (centred on annotated pixels), move it to the device, augment it (elastic +
affine + gray values), forward, weighted soft-max cross-entropy over the output region, backward,
AdamW step — :meth:`Trainer.train_step`. Bare: the same network, optimiser and tile, one fixed
random tensor, unweighted ``F.cross_entropy``. Both measured in the same process, alternating
blocks of steps, after a warm-up; the ratios of the medians and of the minima are printed
(target ≤ 1.1).

    python benchmarks/bench_train_step.py --steps 30
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="timed steps per loop")
    p.add_argument("--tile", type=int, default=572)
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    from napari_unet.core.synthetic import synthetic_cells
    from napari_unet.core.training import PatchSampler, Trainer, config_for_device, prepare_pairs
    from napari_unet.core.training.presets import make_optimizer

    image, labels = synthetic_cells((768, 768), seed=0)
    cfg = config_for_device(args.device, steps=10**9, tile=args.tile, depth=args.depth,
                          base_channels=args.base_channels, validate_every=0,
                          val_fraction=0.0, dropout=0.0)
    trainer = Trainer([(image, labels)], cfg)
    dev = trainer.device
    prepared = prepare_pairs(trainer.pairs, pad=trainer.tile // 2 + 1, cover=trainer.tile)
    sampler = PatchSampler(prepared, tile=trainer.tile, rng=np.random.default_rng(0))

    bare_net = Trainer([(image, labels)], cfg).model  # same architecture, own weights
    bare_opt = make_optimizer(trainer.preset, bare_net.parameters(), lr=trainer.lr)
    x = torch.randn(1, 1, trainer.tile, trainer.tile, device=dev)
    y = torch.randint(0, 2, (1, trainer.out_tile, trainer.out_tile), device=dev)

    def bare_step():
        bare_net.train()
        with torch.autocast(dev.type, dtype=torch.float16, enabled=trainer.amp):
            out = bare_net(x)
        loss = F.cross_entropy(out.float(), y)
        bare_opt.zero_grad(set_to_none=True)
        loss.backward()
        bare_opt.step()
        return float(loss.detach())

    def ours_step():
        trainer.step += 1
        return trainer.train_step(sampler)[0]

    def timed(fn) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    for _ in range(3):  # warm-up
        bare_step()
        ours_step()
    ours, bare = [], []
    block = 5
    while len(ours) < args.steps:
        ours += [timed(ours_step) for _ in range(block)]
        bare += [timed(bare_step) for _ in range(block)]
    # the parts of our step, measured separately
    t = time.perf_counter()
    for _ in range(10):
        img, tgt, wts = sampler.sample(trainer.batch_size)
    t_sample = (time.perf_counter() - t) / 10
    from napari_unet.core.augment import augment_batch

    ti, tt, tw = (torch.from_numpy(a).to(dev) for a in (img, tgt, wts))
    t = time.perf_counter()
    for _ in range(10):
        augment_batch(ti, tt, tw, config=cfg.augment, generator=trainer.generator,
                      out_shape=(trainer.out_tile, trainer.out_tile))
    t_aug = (time.perf_counter() - t) / 10
    mo, mb = statistics.median(ours), statistics.median(bare)
    print(f"device {dev}, {torch.get_num_threads()} threads; U-Net depth {args.depth}, base "
          f"{args.base_channels}, tile {trainer.tile} -> {trainer.out_tile}, batch "
          f"{trainer.batch_size}, {args.steps} steps each")
    print(f"bare PyTorch step: median {mb * 1e3:.1f} ms")
    print(f"our training step: median {mo * 1e3:.1f} ms (patch sampling {t_sample * 1e3:.1f} ms, "
          f"augmentation {t_aug * 1e3:.1f} ms)")
    print(f"ratio ours / bare: {mo / mb:.3f} of the medians, {min(ours) / min(bare):.3f} of the "
          "minima (the minima are steadier on a shared machine); target <= 1.1")


if __name__ == "__main__":
    main()
