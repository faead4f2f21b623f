"""The parts of ``benchmarks/gpu_check.sh``: each measures one thing and adds its figures to one
JSON file (``--out``, a section per part).

- ``env``: GPU, driver, torch, CUDA, cuDNN and the packages' versions.
- ``speed``: training steps/s of the paper's network (depth 4, 64 base channels, tile 572,
  batch 1, the ``paper`` preset) and of the CPU recipe (depth 3, 16 base, tile 156, batch 2,
  ``adamw``), each with and without mixed precision, on one synthetic image, in alternating
  rounds (the medians of the step times).
- ``predict``: prediction Mpixel/s on a 2048 x 2048 image, one pass and with the default
  test-time augmentation (``TTA_TRANSFORMS``: the image and its half-turn), of the
  paper's network and of the shipped ``nuclei`` model, and its whole segmentation path.
- ``dsb``: ``napari-unet train --gray --time-limit 180`` with the defaults of the device on the
  packed DSB training images (``gpu_pack.py``), then ``napari-unet evaluate`` on the
  validation images.
- ``memory``: a training as the Train widget runs it, without Qt (the form's plan, a run
  folder, the child process of :func:`napari_unet.engine.child.launch`, the model loaded in a
  worker thread), then ``torch.cuda.memory_allocated()`` of this, the parent, process
  (target 0).
- ``tests``: the counts of a pytest JUnit XML report; ``mark``: a part's exit status and time.

``--dry-run`` makes every part small enough for a CPU in seconds (the check's own test).

    python benchmarks/gpu_check.py speed --out gpu_check.json [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: the two training set-ups timed: the paper's and the CPU recipe (the GUI's CPU defaults)
NETWORKS = {
    "paper": dict(preset="paper", depth=4, base_channels=64, tile=572, batch_size=1,
                  dropout=0.5),
    "cpu_recipe": dict(preset="adamw", depth=3, base_channels=16, tile=156, batch_size=2,
                       dropout=0.0),
}
#: a dry run's networks: the same presets and batches, small enough for a CPU
DRY_NETWORKS = {"paper": dict(NETWORKS["paper"], depth=2, base_channels=4, tile=44),
                "cpu_recipe": dict(NETWORKS["cpu_recipe"], depth=2, base_channels=4, tile=44)}


def update(out: Path, section: str, value) -> None:
    """Set ``section`` of the JSON file ``out`` (written atomically)."""
    data = json.loads(out.read_text()) if out.is_file() else {}
    data[section] = value
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(out)
    print(f"{section}: {json.dumps(value, default=str)}", flush=True)


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def env_info(args) -> dict:
    import importlib.metadata as md

    import torch

    from gpu_pack import git_commit

    info = {"python": sys.version.split()[0], "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "commit": git_commit(),
            # float32 convolutions on CUDA run in TF32 where cuDNN allows it (torch's default)
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count)
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True)
        info["driver"] = smi.stdout.strip() or None
    for name in ("napari-cell-unet", "numpy", "scipy", "scikit-image", "numba", "dask", "zarr",
                 "tifffile", "safetensors", "pytest", "hypothesis"):
        try:
            info[name] = md.version(name)
        except md.PackageNotFoundError:
            info[name] = None
    return info


def set_mixed_precision(trainer, on: bool) -> None:
    """Switch a new trainer's mixed precision before its first step, as the Trainer sets it
    up: on CUDA float16 autocast, a gradient scaler and channels-last tensors (its default),
    else float32 contiguous (TF32 convolutions where cuDNN allows them); on the CPU bfloat16
    autocast, contiguous (its default where the CPU computes bf16), else float32
    channels-last."""
    import torch

    if trainer.device.type == "cuda":
        trainer.amp = on
        trainer.scaler = torch.amp.GradScaler("cuda", enabled=on)
        trainer.channels_last = on
    else:
        trainer.bf16 = on
        trainer.channels_last = not on
    trainer.memory_format = (torch.channels_last if trainer.channels_last
                             else torch.contiguous_format)
    trainer.model.to(memory_format=trainer.memory_format)


def timed_steps(trainer, sampler, n: int) -> list[float]:
    times = []
    for _ in range(n):
        sync()
        t0 = time.perf_counter()
        trainer.train_step(sampler)
        sync()
        times.append(time.perf_counter() - t0)
    return times


def train_speed(args) -> dict:
    """Steps/s of each network with and without mixed precision: one trainer per mode, a
    warm-up, then ``rounds`` rounds in which every mode trains ``steps`` steps in turn."""
    import torch

    from napari_unet.core.synthetic import synthetic_cells
    from napari_unet.core.training import TrainConfig, Trainer

    image, labels = synthetic_cells((128, 128) if args.dry_run else (1024, 1024), seed=0)
    nets = DRY_NETWORKS if args.dry_run else NETWORKS
    warm, rounds, steps = (1, 1, 1) if args.dry_run else (3, 5, 8)
    runs, result = {}, {}
    for name, arch in nets.items():
        for mixed in (True, False):
            cfg = TrainConfig(steps=10**6, validate_every=0, val_fraction=0.0, seed=0,
                              device=args.device, **arch)
            cuda = torch.device(args.device).type == "cuda"
            if cuda:  # the memory this mode takes at its peak: model, optimiser, one step
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            trainer = Trainer([(image, labels)], cfg)
            set_mixed_precision(trainer, mixed)
            sampler = trainer.make_sampler()
            key = f"{name}_{'mixed' if mixed else 'float32'}"
            timed_steps(trainer, sampler, warm)
            peak = (torch.cuda.max_memory_allocated() - before) / 2**30 if cuda else None
            t0 = time.perf_counter()
            for _ in range(3):
                trainer.training_batch(sampler)
            batch_s = (time.perf_counter() - t0) / 3
            runs[key] = (trainer, sampler, [])
            result[key] = {"tile": trainer.tile, "out_tile": trainer.out_tile,
                           "batch": trainer.batch_size, "preset": cfg.preset,
                           "depth": cfg.depth, "base_channels": cfg.base_channels,
                           "device": str(trainer.device), "autocast": _autocast(trainer),
                           "peak_gib": None if peak is None else round(peak, 2),
                           "batch_prep_ms": round(1000 * batch_s, 1)}
    for _ in range(rounds):  # alternating: a drift of the machine hits every mode alike
        for trainer, sampler, times in runs.values():
            times += timed_steps(trainer, sampler, steps)
    for key, (_, _, times) in runs.items():
        med = statistics.median(times)
        result[key].update(steps=len(times), median_step_ms=round(1000 * med, 2),
                           min_step_ms=round(1000 * min(times), 2),
                           steps_per_s=round(1 / med, 2))
    for name in nets:
        a, b = result[f"{name}_mixed"], result[f"{name}_float32"]
        result[f"{name}_mixed_speedup"] = round(b["median_step_ms"] / a["median_step_ms"], 3)
    return result


def _autocast(trainer) -> str:
    if trainer.device.type == "cuda":
        return "float16" if trainer.amp else "none (float32, TF32 convolutions)"
    return "bfloat16" if trainer.bf16 else "none (float32)"


def _median_s(fn, repeats: int, *, warm_up: bool = True) -> float:
    if warm_up:  # kernels chosen, memory taken
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def predict_speed(args) -> dict:
    """Mpixel/s of :func:`napari_unet.core.predict.predict_image` (the automatic tile, batch
    1) of the paper's network and of the shipped model, one pass and with test-time
    augmentation (the passes of ``TTA_TRANSFORMS``); the shipped
    model's :func:`napari_unet.core.predict.segment` too (post-processing included)."""
    import torch

    from napari_unet.core.io.model_file import load_model
    from napari_unet.core.model import UNet
    from napari_unet.core.predict import predict_image, segment
    from napari_unet.core.predict.passes import TTA_TRANSFORMS
    from napari_unet.core.predict.postprocess import stored_tta
    from napari_unet.core.synthetic import synthetic_cells
    from napari_unet.models import model_path

    side = 128 if args.dry_run else 2048
    repeats = 1 if args.dry_run else 3
    image, _ = synthetic_cells((side, side), radius=10, seed=1)
    torch.manual_seed(0)
    paper = UNet(depth=2 if args.dry_run else 4, base_channels=4 if args.dry_run else 64).eval()
    models = {"paper": (paper, None), "nuclei": load_model(model_path("nuclei"))}
    mpx = side * side / 1e6
    result = {"image": [side, side], "repeats": repeats, "tta_passes": len(TTA_TRANSFORMS)}
    for name, (model, meta) in models.items():
        model.to(args.device)
        for tta in (False, True):
            s = _median_s(lambda m=model, md=meta, t=tta: predict_image(
                m, image, metadata=md, tta=t, device=args.device), repeats,
                warm_up=not args.dry_run)
            key = f"{name}_{'tta' if tta else 'one_pass'}"
            result[key] = {"seconds": round(s, 3), "mpixel_per_s": round(mpx / s, 2)}
    model, meta = models["nuclei"]
    # once: the network is warm, and the post-processing of 4 Mpixel takes seconds on the CPU
    s = _median_s(lambda: segment(model, image, metadata=meta, device=args.device), 1,
                  warm_up=False)
    result["nuclei_segment"] = {"seconds": round(s, 3), "mpixel_per_s": round(mpx / s, 2),
                                "tta": stored_tta(meta)}
    return result


def dsb(args) -> dict:
    """``napari-unet train --gray`` on the pack's training images for ``--time-limit`` s with
    the device's defaults, then ``napari-unet evaluate --json`` on its validation images."""
    data, work = Path(args.data), Path(args.work)
    manifest = json.loads((data / "manifest.json").read_text())
    work.mkdir(parents=True, exist_ok=True)
    model, events = work / "dsb.safetensors", Path(args.events or work / "dsb_events.jsonl")
    cli = [sys.executable, "-m", "napari_unet"]
    train = [*cli, "train", "--images", str(data / "train" / "images"), "--labels",
             str(data / "train" / "labels"), "--gray", "--out", str(model), "--force",
             "--time-limit", str(args.time_limit), "--events", str(events),
             "--device", args.device]
    if args.dry_run:  # three steps, no validation: the path, not the figure
        train += ["--steps", "3", "--validate-every", "0"]
    t0 = time.perf_counter()
    subprocess.run(train, check=True)
    train_s = time.perf_counter() - t0
    kinds = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    started = next(e for e in kinds if e["kind"] == "started")
    done = kinds[-1]
    steps = [e for e in kinds if e["kind"] == "step"]
    t0 = time.perf_counter()
    ev = subprocess.run([*cli, "evaluate", "--model", str(model), "--json", "--gray",
                         "--device", args.device, "--images",
                         str(data / "validation" / "images"), "--labels",
                         str(data / "validation" / "labels")],
                        check=True, stdout=subprocess.PIPE, text=True)
    eval_s = time.perf_counter() - t0
    rows = json.loads(ev.stdout)["images"]
    colour = set(manifest["colour"])

    def f1(part):
        vals = [r["instance_f1"] for r in part]
        return {"images": len(vals), "f1_mean_per_image": round(statistics.mean(vals), 4)
                if vals else None}

    settings = started.get("settings", {})
    return {
        "data": manifest["about"], "packed_at_commit": manifest["commit"],
        "train_images": len(manifest["parts"]["train"]),
        "time_limit_s": args.time_limit, "train_wall_s": round(train_s, 1),
        "end": done["kind"], "steps": done.get("step"),
        # the trainer's smoothed rate at the end, and over the whole run (validations, the
        # targets' preparation and the post-processing choice included)
        "steps_per_s_last": round(steps[-1]["steps_per_s"], 2)
        if steps and steps[-1].get("steps_per_s") else None,
        "steps_per_s_overall": round((done.get("step") or 0) / train_s, 2),
        "settings": {k: settings.get(k) for k in ("preset", "depth", "base_channels", "tile",
                                                  "batch_size", "lr", "device", "dropout")},
        "validation": f1(rows),
        "validation_gray": f1([r for r in rows if Path(r["image"]).stem not in colour]),
        "validation_colour": f1([r for r in rows if Path(r["image"]).stem in colour]),
        "evaluate_wall_s": round(eval_s, 1),
    }


#: the Train widget's checkpoint interval (``widgets/train.py``'s CHECKPOINT_EVERY)
GUI_CHECKPOINT_EVERY = 50


class RecordingView:
    """A :class:`napari_unet.engine.client.ClientView` that records what the Train widget
    would show: the loss steps, the errors, the published model, the end."""

    def __init__(self):
        self.losses, self.errors, self.published, self.over = [], [], None, False

    def show_status(self, text): pass
    def add_loss(self, step, loss): self.losses.append(step)
    def add_metrics(self, step, metrics): pass
    def show_info(self, text): pass
    def show_error(self, text): self.errors.append(text)
    def pending(self): pass
    def finished(self): pass
    def publish(self, model, metadata, path): self.published = model
    def ended(self): self.over = True


def memory(args) -> dict:
    """A training as the Train widget runs it, without Qt (the device machine has none): the
    form's plan of its budget for the device (:func:`plan`, its memory check included, in this
    process), a run folder of sparse pairs, the widget's Qt-free client
    (:class:`napari_unet.engine.client.TrainingClient`: the child process, its events polled,
    the model loaded in a worker thread and published); then this process's CUDA memory
    (target: 0 bytes allocated)."""
    import dataclasses

    from napari_unet.core.synthetic import synthetic_cells
    from napari_unet.core.training import DataSummary, TrainingPair, plan
    from napari_unet.engine.client import TrainingClient
    from napari_unet.engine.runs import new_run_dir, write_run
    from napari_unet.widgets.jobs import background_threads  # no Qt in this module

    image, labels = synthetic_cells((96, 96) if args.dry_run else (512, 512), seed=0)
    pairs = [TrainingPair(image, labels, sparse=True)]
    choices = {"steps": 3 if args.dry_run else 100, "time_limit": 120.0, "device": args.device}
    config = plan(choices, DataSummary.of(pairs)).config
    config = dataclasses.replace(config, checkpoint_every=GUI_CHECKPOINT_EVERY,
                                 threads=background_threads())
    run_dir = new_run_dir(Path(args.work) / "runs", name="gpu_check")
    write_run(run_dir, pairs, settings=config, seed=config.seed, sparse=True,
              names=["gpu_check"])
    view = RecordingView()
    client = TrainingClient(view)
    t0 = time.perf_counter()
    proc = client.start(run_dir, device=args.device)
    try:
        while not view.over and time.perf_counter() - t0 < 240:
            client.poll()  # as the widget's timer does
            time.sleep(0.2)
    finally:  # the child runs in a session of its own: a time limit's signal misses it
        client.stop(wait=True, timeout=10)
    import torch

    model = view.published
    result = {"end": (proc.terminal or {}).get("kind"), "exit_code": proc.returncode,
              "child_device": (proc.started or {}).get("device"),
              "steps": (proc.terminal or {}).get("step"), "losses_shown": len(view.losses),
              "errors": view.errors, "child_wall_s": round(time.perf_counter() - t0, 1),
              "model_published_on": None if model is None
              else str(next(model.parameters()).device),
              # the plan's memory check (torch.cuda.mem_get_info) opens a CUDA context here
              "parent_cuda_initialized": torch.cuda.is_initialized()}
    if torch.cuda.is_available():
        result.update(memory_allocated=torch.cuda.memory_allocated(),
                      memory_reserved=torch.cuda.memory_reserved(),
                      parent_gpu_mib=gpu_mib_of(os.getpid()))
        result["target_met"] = result["memory_allocated"] == 0
    return result


def gpu_mib_of(pid: int) -> int | None:
    """GPU memory (MiB) that ``nvidia-smi`` shows for process ``pid`` (its CUDA context), 0
    when it is not listed, None when nvidia-smi cannot tell."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [line.split(",") for line in out.splitlines() if "," in line]
    return next((int(mib) for p, mib in rows if p.strip() == str(pid)), 0)


def junit(args) -> dict:
    """Counts, failures and skip reasons of the pytest JUnit XML report ``--junit``."""
    import collections
    import xml.etree.ElementTree as ET

    path = Path(args.junit)
    result = {"exit_code": args.rc, "seconds": args.seconds, "report": path.name}
    if not path.is_file():
        return {**result, "report": None, "note": "no report: pytest did not start or was killed"}
    cases = list(ET.parse(path).getroot().iter("testcase"))

    def where(case) -> str:
        return f"{case.get('classname')}::{case.get('name')}"

    failed = [where(c) for c in cases if c.find("failure") is not None
              or c.find("error") is not None]
    skipped = [c.find("skipped") for c in cases if c.find("skipped") is not None]
    reasons = collections.Counter(s.get("message", "") for s in skipped)
    return {**result, "tests": len(cases), "failed": len(failed),
            "skipped": len(skipped), "passed": len(cases) - len(failed) - len(skipped),
            "failures": failed[:50], "skip_reasons": dict(reasons.most_common(20))}


PARTS = {"env": env_info, "speed": train_speed, "predict": predict_speed, "dsb": dsb,
         "memory": memory}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=[*PARTS, "tests", "mark"])
    p.add_argument("--out", type=Path, required=True, help="the JSON file of the figures")
    p.add_argument("--dry-run", action="store_true", help="every part small, for a CPU")
    p.add_argument("--device", default="auto")
    p.add_argument("--data", help="dsb: the folder gpu_pack.py wrote")
    p.add_argument("--work", default="/tmp/napari_unet_gpu_check", help="scratch folder")
    p.add_argument("--time-limit", type=float, default=180.0, help="dsb: training seconds")
    p.add_argument("--events", help="dsb: where the training's JSON-line events go")
    p.add_argument("--section", help="tests, mark: the section's name")
    p.add_argument("--junit", help="tests: the pytest JUnit XML report")
    p.add_argument("--rc", type=int, help="tests, mark: the exit status")
    p.add_argument("--seconds", type=float, help="tests, mark: the wall time")
    p.add_argument("--note", help="mark: why a part did not run")
    args = p.parse_args(argv)
    if args.part == "mark":  # a part's exit status and time, as gpu_check.sh saw them
        data = json.loads(args.out.read_text()) if args.out.is_file() else {}
        mark = {"exit_code": args.rc, "seconds": args.seconds}
        parts = {**data.get("parts", {}), args.section: {**mark, **({"note": args.note}
                                                                  if args.note else {})}}
        update(args.out, "parts", parts)
        return 0
    if args.part == "tests":
        update(args.out, args.section or "tests", junit(args))
        return 0
    result = PARTS[args.part](args)
    update(args.out, args.part, result)
    return 1 if result.get("target_met") is False else 0  # memory: the part fails


if __name__ == "__main__":
    raise SystemExit(main())
