"""Where the time of a 3D training step goes, and 3D recipes' steps per minute, in one run.

The data of ``bench_tissue.py``: the shared ``plantseg_ovule_cells`` volume (32 × 128 × 128, a
cell-wall stain), every cell labelled on the planes z = 5, 16, 27 and nothing else counting, as
``napari-unet train --ndim 3 --annotated-slices z=5,16,27 --time-limit 900`` trains it (its plan:
:func:`napari_unet.core.training.plan`; the tissue target, recognised). Each setting is one
:class:`~napari_unet.core.training.Trainer`; its steps are :meth:`Trainer.train_step` itself,
with the parts timed by wrapping what the step calls:

- *sample*: the patches cut from the padded volume (``PatchSampler.sample_instances``);
- *augment*: elastic + affine + gray values of image, instance ids and counted voxels;
- *target+weights*: the target and the border weight map of every warped patch;
- *forward*, *loss*, *backward*, *optimizer* (AdamW); *other*: the rest of the step (the
  device copies, ``zero_grad``, the learning-rate schedule).

Settings are timed in alternating blocks (``--rounds`` × ``--steps``) after a warm-up step, so
that a change of load hits them alike. Reported per setting: the median step, steps per minute,
and the *supervised voxels* per step and per second (voxels of the output region with a weight
> 0: only those teach the network; a thinner tile makes more steps of fewer of them).
``--ops`` adds PyTorch's profiler table of one step of the first setting.

A setting is a comma-separated list of changes to the planned recipe (``today``: none):
``bf16=on|off``, ``cl=on|off`` (channels-last 3D weights and inputs, ``--cpu-channels-last``),
``tile=ZxYxX``, ``batch=N``, ``base=N`` (base channels), ``depth=N``. The default settings:
today's recipe, without channels-last (the recipe before it), in float32 with and without it,
and two tiles of batch 1 and 220 × 220 voxels in xy: as deep as today's, and the shallowest
(4 output planes around the annotated one).

    python benchmarks/bench_3d_step.py                                 # today vs candidates
    python benchmarks/bench_3d_step.py --settings today cl=off --ops   # the ops of today's step
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tissue import DEFAULT_DATA, default_planes, read_volume

DEFAULT_SETTINGS = ("today", "cl=off", "bf16=off", "bf16=off,cl=off", "tile=124x220x220,batch=1",
                    "tile=92x220x220,batch=1")
PARTS = ("sample", "augment", "target+weights", "forward", "loss", "backward", "optimizer",
         "other")


def parse_setting(text: str) -> dict:
    """``"bf16=off,tile=92x156x156"`` → {"bf16": "off", "tile": (92, 156, 156)}."""
    out = {}
    for item in filter(None, ("" if text == "today" else text).split(",")):
        key, _, value = item.partition("=")
        if key == "tile":
            out[key] = tuple(int(v) for v in value.split("x"))
        elif key in ("batch", "base", "depth"):
            out[key] = int(value)
        elif key in ("bf16", "cl"):
            out[key] = value
        else:
            raise argparse.ArgumentTypeError(
                f"setting {text!r}: unknown change {key!r}; expected bf16, cl, tile, batch, "
                "base or depth")
    return out


def volume_pairs(data: Path):
    """The ovule volume labelled on three planes, as ``napari-unet train --annotated-slices``
    gives it to the trainer."""
    from napari_unet.core.targets import slices_mask
    from napari_unet.core.training import TrainingPair

    image, labels = read_volume(data)
    planes = default_planes(image.shape[0])
    mask = slices_mask(labels.shape, z=planes)
    return [TrainingPair(image, np.where(mask, labels, 0), annotated=mask, ndim=3)], planes


def make_trainer(pairs, change: dict, *, time_limit: float, seed: int):
    """A Trainer of today's plan for ``pairs`` (the command line's, ``--time-limit``) with the
    setting's changes."""
    from napari_unet.core.training import Trainer
    from napari_unet.core.training.plan import DataSummary, plan

    choices = {"time_limit": time_limit, "ndim": 3, "device": "cpu", "seed": seed,
               "validate_every": 0, "val_fraction": 0.0}
    for key, field in (("bf16", "cpu_bf16"), ("cl", "cpu_channels_last"), ("tile", "tile"),
                       ("batch", "batch_size"), ("base", "base_channels"), ("depth", "depth")):
        if key in change:
            choices[field] = change[key]
    config = plan(choices, DataSummary.of(pairs)).config
    trainer = Trainer(pairs, config)
    return trainer


class StepTimer:
    """Times the parts of :meth:`Trainer.train_step` by wrapping what it calls."""

    def __init__(self, trainer, sampler):
        self.trainer, self.sampler = trainer, sampler
        self.parts = defaultdict(float)
        self.supervised = []

    def _wrap(self, name, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.parts[name] += time.perf_counter() - t0
        return timed

    @contextlib.contextmanager
    def patched(self):
        import torch

        import napari_unet.core.training.batch as batch_mod
        import napari_unet.core.training.trainer as trainer_mod

        saved = [(batch_mod, "augment_batch"), (batch_mod, "targets_from_instances"),
                 (trainer_mod, "weighted_cross_entropy"), (torch.Tensor, "backward")]
        originals = [getattr(obj, name) for obj, name in saved]
        names = ["augment", "target+weights", "loss", "backward"]
        sampler, opt = self.sampler, self.trainer.optimizer
        sample, step = sampler.sample_instances, opt.step
        try:
            for (obj, attr), fn, name in zip(saved, originals, names, strict=True):
                setattr(obj, attr, self._wrap(name, fn))
            sampler.sample_instances = self._wrap("sample", sample)
            opt.step = self._wrap("optimizer", step)
            model = self.trainer.model
            starts = []
            hooks = [model.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter())),
                     model.register_forward_hook(self._forward_done(starts))]
            yield
        finally:
            for (obj, attr), fn in zip(saved, originals, strict=True):
                setattr(obj, attr, fn)
            del sampler.sample_instances, opt.step
            for h in hooks:
                h.remove()

    def _forward_done(self, starts):
        def hook(*_):
            self.parts["forward"] += time.perf_counter() - starts.pop()
        return hook

    def step(self) -> float:
        """One training step; its seconds (the parts accumulate in :attr:`parts`)."""
        trainer = self.trainer
        batch = trainer.training_batch

        def counting(sampler):
            img, tgt, wts = batch(sampler)
            self.supervised.append(int((wts > 0).sum()))
            return img, tgt, wts

        trainer.training_batch = counting
        t0 = time.perf_counter()
        try:
            trainer.train_step(self.sampler)
        finally:
            trainer.training_batch = batch
        trainer.step += 1
        return time.perf_counter() - t0


def op_table(timer: StepTimer, rows: int = 14) -> str:
    """PyTorch's profiler table (self CPU time) of one step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        timer.step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", nargs="+", type=parse_setting,
                   default=[parse_setting(s) for s in DEFAULT_SETTINGS],
                   help="changes to today's recipe per setting (see above); the first is the "
                        "reference")
    p.add_argument("--steps", type=int, default=2, help="timed steps per block")
    p.add_argument("--rounds", type=int, default=2, help="blocks per setting, alternating")
    p.add_argument("--time-limit", type=float, default=900.0,
                   help="the budget the recipe is planned for (its rate; nothing waits for it)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ops", action="store_true", help="profile one step of the first setting")
    p.add_argument("--json", type=Path, help="write the report here")
    args = p.parse_args(argv)

    import torch

    from napari_unet.core.device import configure_cpu_threads

    load_before = os.getloadavg()
    pairs, planes = volume_pairs(args.data)
    threads = configure_cpu_threads(None)
    names = [",".join(f"{k}={'x'.join(map(str, v)) if k == 'tile' else v}"
                      for k, v in s.items()) or "today" for s in args.settings]
    runs = {}
    for name, change in zip(names, args.settings, strict=True):
        t0 = time.perf_counter()
        trainer = make_trainer(pairs, change, time_limit=args.time_limit, seed=args.seed)
        timer = StepTimer(trainer, trainer.make_sampler())
        prep = time.perf_counter() - t0
        timer.step()  # warm-up: compiled kernels, allocator
        timer.parts.clear()
        timer.supervised.clear()
        runs[name] = (timer, [], prep)
        print(f"{name}: tile {trainer.tile_shape} -> {trainer.out_shape}, batch "
              f"{trainer.batch_size}, base {trainer.model.base_channels}, pool "
              f"{trainer.model.pool_factors}, bf16 {trainer.bf16}, target {trainer.target}; "
              f"set-up {prep:.1f} s", file=sys.stderr, flush=True)
    for _ in range(args.rounds):
        for name, (timer, times, _) in runs.items():
            with timer.patched():
                times += [timer.step() for _ in range(args.steps)]
            print(f"  {name}: steps of {', '.join(f'{t:.2f}' for t in times)} s", file=sys.stderr,
                  flush=True)
    report = {"data": "plantseg_ovule_cells", "planes": planes, "threads": threads,
              "torch": torch.__version__, "load_before": load_before,
              "load_after": os.getloadavg(), "settings": {}}
    ref = None
    for name, (timer, times, prep) in runs.items():
        n, med = len(times), statistics.median(times)
        total = sum(times)
        parts = {k: timer.parts.get(k, 0.0) / n for k in PARTS[:-1]}
        parts["other"] = max(total / n - sum(parts.values()), 0.0)
        sup = float(np.mean(timer.supervised))
        ref = ref or (med, sup / med)
        t = timer.trainer
        report["settings"][name] = {
            "tile": list(t.tile_shape), "out": list(t.out_shape), "batch": t.batch_size,
            "base_channels": t.model.base_channels, "bf16": t.bf16,
            "step_s": round(med, 3), "steps_per_min": round(60 / med, 2),
            "steps_ratio": round(ref[0] / med, 2), "supervised_voxels": round(sup),
            "supervised_per_s": round(sup / med), "supervised_ratio": round(sup / med / ref[1], 2),
            "parts_s": {k: round(v, 3) for k, v in parts.items()}, "setup_s": round(prep, 1),
            "steps_timed": n}
    print(f"{threads} threads, torch {torch.__version__}; annotated planes z = {planes}; load "
          f"{report['load_before'][0]:.2f} before, {report['load_after'][0]:.2f} after")
    print("setting | tile -> out, batch | step s | steps/min (x) | supervised voxels/step, /s (x)"
          " | " + " / ".join(PARTS) + " (s)")
    for name, r in report["settings"].items():
        print(f"{name} | {'x'.join(map(str, r['tile']))} -> {'x'.join(map(str, r['out']))}, "
              f"{r['batch']} | {r['step_s']:.2f} | {r['steps_per_min']:.1f} "
              f"({r['steps_ratio']:.2f}) | {r['supervised_voxels']}, {r['supervised_per_s']} "
              f"({r['supervised_ratio']:.2f}) | "
              + " / ".join(f"{r['parts_s'][k]:.2f}" for k in PARTS))
    if args.ops:
        print(op_table(next(iter(runs.values()))[0]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
