"""DSB2018 nuclei: train on the split of ``benchmarks/splits.json``, evaluate through ``napari-unet predict``.

Training runs the library's Trainer with the CLI's defaults (plus the options below) for a
wall-clock budget (``--time-limit``) or a step budget (``--time-limit 0 --steps N``: the same
figure on any machine and under any load); the model is then saved and the evaluation images are
predicted by the command line (``napari-unet predict``, in-process), as a user would. Reported:
instance F1 at IoU 0.5 and the AP@0.5 StarDist reports (its "accuracy", TP / (TP + FP + FN)),
pooled over the images (StarDist's ``matching_dataset``) and as a per-image mean, for all
evaluation images and for the gray and the colour ones apart (colour: R, G, B not all equal).

Which images (``benchmarks/dsb_split.py``): ``--train-set dsb2018-train`` (default: the 80
images of ``shared/data/dsb2018`` in the training part), ``dsb2018`` (all 100 of that folder)
or ``train`` (the 384 of the training part); ``--eval validation`` (default: 80 images, where
every choice is made) or ``test`` (100 images, scored once per change, never used to choose).

    python benchmarks/bench_dsb.py --time-limit 0 --steps 14000       # a recipe, on validation
    python benchmarks/bench_dsb.py --colour hematoxylin ...             # colour images' gray
    python benchmarks/bench_dsb.py --classes 3 --time-limit 900         # 3-class target
    python benchmarks/bench_dsb.py --channels rgb --time-limit 900      # colour input (3 ch)
    python benchmarks/bench_dsb.py --cpu-bf16 off --time-limit 900      # float32 on the CPU
    python benchmarks/bench_dsb.py --speed 10 --time-limit 0 --no-eval  # steps/min per mode
    python benchmarks/bench_dsb.py --model nuclei --time-limit 0        # a model, no training
    python benchmarks/bench_dsb.py --model nuclei --rechoose            # its post-processing
                                                                        # chosen by today's code

``--invert auto|off`` sets the input polarity rule (``normalization["invert"]``: "auto"
inverts bright-background images, brightfield / H&E) of the trained model, or of a copy of the
``--model`` evaluated; by default new gray models use "auto" and a ``--model`` keeps its own.

``--speed N`` first times N training steps per mode, float32 contiguous, float32 channels-last
and bfloat16 autocast alternating in two rounds on the same trainer, and reports steps per
minute of each (same run). ``--ship`` writes ``src/napari_unet/models/nuclei.safetensors``
(float16 weights) and its model card ``nuclei.md`` with the figures measured here
(``scripts/train_shipped_model.py``); the card reports the test images.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dsb_split import EVAL_SETS, TRAIN_SETS, dsb_ids, image_path, label_path, scores  # noqa: E402


def load(ids, channels: str = "gray", colour: str = "mean"):
    """[(id, image, channel_axis, labels, is_colour)] with images as the bench trains on them.

    ``colour``: how a 1-channel model sees a colour image: "mean" (of R, G, B, what ``--gray``
    does) or "hematoxylin" (the hematoxylin stain of :func:`skimage.color.rgb2hed`).
    """
    from napari_unet.commands.files import read_image, read_labels

    out = []
    for i in ids:
        path = image_path(i)
        image, axis = read_image(path, gray="mean" if channels == "gray" else None)
        raw, raw_axis = read_image(path)
        is_colour = raw_axis is not None
        if is_colour and channels == "gray" and colour != "mean":
            from skimage.color import rgb2hed

            rgb = np.moveaxis(raw, raw_axis, -1)[..., :3].astype(np.float32) / 255.0
            image = rgb2hed(rgb)[..., 0].astype(np.float32)
        if channels == "rgb" and axis is None:
            image, axis = np.repeat(image[..., None], 3, axis=-1), -1
        labels = read_labels(label_path(i), shape=image.shape[:2])
        out.append((i, image, axis, labels, is_colour))
    return out


def _set_layout(trainer, channels_last: bool) -> None:
    """The trainer's weights, optimiser moments and batches in one memory layout."""
    from napari_unet.core.device import cpu_layout
    from napari_unet.core.training.checkpoint import match_moment_layout

    cpu_layout(trainer.model, channels_last=channels_last)
    trainer.channels_last = channels_last
    match_moment_layout(trainer.optimizer)


def speed(trainer, sampler, steps: int) -> dict:
    """Steps per minute of the same trainer in three modes, alternating: float32 with contiguous
    tensors, float32 channels-last (the CPU default without bf16), bf16 autocast (contiguous,
    the default where the CPU computes bf16 natively)."""
    from napari_unet.core.device import cpu_supports_bf16

    if trainer.device.type != "cpu":
        return {"skipped": f"device {trainer.device}"}
    modes = {"float32": (False, False), "float32_channels_last": (False, True),
             "bf16": (True, False)}
    times = {m: [] for m in modes}
    keep = trainer.bf16, trainer.channels_last

    def use(mode):
        trainer.bf16, cl = modes[mode]
        _set_layout(trainer, cl)

    for mode in modes:  # warm-up
        use(mode)
        trainer.train_step(sampler)
    for _ in range(2):
        for mode in modes:
            use(mode)
            for _ in range(steps):
                t0 = time.perf_counter()
                trainer.train_step(sampler)
                times[mode].append(time.perf_counter() - t0)
    trainer.bf16 = keep[0]
    _set_layout(trainer, keep[1])
    med = {m: statistics.median(t) for m, t in times.items()}
    # the per-sample cost of deriving target + weight map from the warped labels
    from napari_unet.core.training.data import targets_from_instances

    _, inst, counted, cw = sampler.sample_instances(1)
    side = trainer.out_tile + 2 * min(math.ceil(5.26 * trainer.config.sigma) + 1,
                                      (trainer.tile - trainer.out_tile) // 2)
    m = (trainer.tile - side) // 2
    inst, counted = inst[0, m : m + side, m : m + side], counted[0, m : m + side, m : m + side]
    t_targets = []
    for _ in range(5):
        t0 = time.perf_counter()
        targets_from_instances(inst, counted > 0, class_weight=cw[0],
                               num_classes=trainer.model.num_classes)
        t_targets.append(time.perf_counter() - t0)
    return {"targets_ms_per_sample": round(1000 * statistics.median(t_targets), 1),
            "label_side": side,
            **{f"{m}_step_s": round(v, 4) for m, v in med.items()},
            **{f"{m}_steps_per_min": round(60 / v, 1) for m, v in med.items()},
            "channels_last_speedup": round(med["float32"] / med["float32_channels_last"], 3),
            "bf16_speedup": round(med["float32"] / med["bf16"], 3),
            "cpu_supports_bf16": cpu_supports_bf16(), "steps_per_mode": 2 * steps}


def train(args, pairs, log):
    from napari_unet.core.augment import AugmentConfig
    from napari_unet.core.training import Trainer, TrainingPair, config_for_device

    augment = {k: v for k, v in (("elastic_sigma", args.elastic_sigma),
                                 ("scale", args.scale and tuple(args.scale))) if v is not None}
    from napari_unet.core.training import cpu_recipe_lr

    time_limit = args.time_limit if args.time_limit > 0 else None
    cfg = config_for_device(
        # the budget is the Trainer's own (wall clock, validation included), so that the
        # learning-rate schedule (warm-up, cosine decay) spans the run: a nominal huge limit
        # stopped from outside kept the schedule at its first step (lr × 0.01) for the whole run
        args.device, steps=args.steps or (None if args.time_limit > 0 else 1),
        time_limit=time_limit,
        num_classes=args.classes, cpu_bf16=args.cpu_bf16, seed=args.seed,
        validate_every=args.validate_every, depth=args.depth, tile=args.tile,
        **({"base_channels": args.base_channels} if args.base_channels else {}),
        **({"batch_size": args.batch_size} if args.batch_size else {}),
        lr=args.lr or cpu_recipe_lr(steps=args.steps, time_limit=time_limit),
        dropout=args.dropout,
        **({"augment": AugmentConfig(**augment)} if augment else {}),
        **({"w0": args.w0} if args.w0 is not None else {}),
        **({"normalization": with_invert(None, args.invert)} if args.invert else {}),
    )
    if args.init:  # fine-tuning at the CLI's rate (napari-unet train --init): --lr wins
        from napari_unet.core.training import fine_tune

        cfg = fine_tune(cfg, lr=args.lr)
    tp = [TrainingPair(img, lab, channel_axis=axis) for _, img, axis, lab, _ in pairs]
    trainer = Trainer(tp, cfg, init_model=args.init)
    result = {"bf16": trainer.bf16, "tile": trainer.tile, "batch": trainer.batch_size}
    if args.speed:
        result["speed"] = speed(trainer, trainer.make_sampler(), args.speed)
        log(f"speed: {result['speed']}")
    if args.time_limit <= 0 and not args.steps:
        return trainer, result
    t0 = time.perf_counter()
    last = 0.0
    for ev in trainer.run():
        if ev.kind == "step":
            last = time.perf_counter() - t0
        if ev.kind == "validation":  # it follows its step at once: the time since is its own
            now = time.perf_counter() - t0
            log(f"step {ev.step} at {now:.0f} s (validation {now - last:.1f} s): {ev.metrics}")
    wall = time.perf_counter() - t0
    log(f"last step at {last:.0f} s; the choice of the post-processing took the rest")
    result.update(steps=trainer.step, wall_s=round(wall, 1), last_step_s=round(last, 1),
                  steps_per_min=round(60 * trainer.step / wall, 2))
    log(f"trained {trainer.step} steps in {wall:.0f} s")
    return trainer, result


def with_invert(normalization, invert: str) -> dict:
    """A normalisation dict with the polarity rule of ``--invert`` (auto / off)."""
    from napari_unet.core.normalize import DEFAULT_NORMALIZATION

    return {**(normalization or DEFAULT_NORMALIZATION), "invert": "auto" if invert == "auto"
            else False}


def evaluate(model_path: Path, test, workdir: Path, tta: bool, extra=()):
    """Predict the test images with the CLI (``extra``: more ``predict`` options) and score
    them."""
    from napari_unet.cli import main as cli
    from napari_unet.commands.files import read_labels, write_image
    from napari_unet.core.metrics import instance_matching

    inp, out = workdir / "images", workdir / "predicted"
    inp.mkdir(parents=True, exist_ok=True)
    for i, img, _, _, _ in test:
        write_image(inp / f"{i}.tif", img)
    argv = ["predict", "--model", str(model_path), "--input", str(inp), "--output", str(out)]
    rc = cli([*argv, "--tta" if tta else "--no-tta", *extra])  # not the model's stored tta
    if rc:
        raise SystemExit(f"napari-unet predict failed ({rc})")
    rows = {"all": [], "gray": [], "colour": []}
    for i, _, _, lab, colour in test:
        pred = read_labels(out / f"{i}_labels.tif")
        m = instance_matching(pred, lab, threshold=0.5)
        rows["all"].append(m)
        rows["colour" if colour else "gray"].append(m)
    return {k: scores(v) for k, v in rows.items()}


def validation_bands(model_path: Path, pairs):
    """(model, metadata, trainer, prepared images, regions): the validation bands that the
    training of ``model_path`` held out (the same training images, tile and validation
    fraction give the same bands), prepared by a Trainer that starts from its weights."""
    from napari_unet.core.io import load_model
    from napari_unet.core.training import TrainConfig, Trainer, TrainingPair

    model, meta = load_model(model_path)
    tr = meta.get("training") or {}
    cfg = TrainConfig(steps=1, tile=tr.get("tile"), val_fraction=tr.get("val_fraction", 0.1),
                      validate_every=1, w0=tr.get("w0", 10.0), sigma=tr.get("sigma", 5.0),
                      **{k: v for k, v in meta["architecture"].items()
                         if k in ("depth", "base_channels", "num_classes", "norm")})
    trainer = Trainer([TrainingPair(img, lab, channel_axis=axis) for _, img, axis, lab, _ in pairs],
                      cfg, init_model=str(model_path))
    prepared, regions, _ = trainer.prepare()
    return model, meta, trainer, prepared, regions


def rechoose(model_path: Path, pairs, out: Path) -> Path:
    """A copy of ``model_path`` whose post-processing is chosen again, by this code, on the
    validation bands its training held out (:func:`validation_bands`): what training would
    store today. The weights are unchanged."""
    from napari_unet.core.io import save_model
    from napari_unet.core.training.choice import choose_postprocess

    model, meta, trainer, prepared, regions = validation_bands(model_path, pairs)
    meta = {k: v for k, v in meta.items() if k not in ("architecture", "napari_unet_version")}
    meta["postprocess"] = choose_postprocess(trainer.model, prepared, regions,
                                             tile=trainer.tile_shape)
    return save_model(model, out, **meta)


#: The scales the shipped model averages, per kind of image (``postprocess["scales"]``,
#: :mod:`napari_unet.core.predict.scales`): chosen on the 80 validation images
#: (``benchmarks/bench_scale.py --average``, :data:`SHIPPED_SCALES_NOTE`); gray images keep
#: their own size, whose extra passes would cost 2.45x for +0.001.
SHIPPED_SCALES = {"gray": [1.0], "colour": [1.0, 0.7, 1.4]}
SHIPPED_SCALES_NOTE = (
    "colour images (R, G, B not all equal) predicted at scales 1, 0.7 and 1.4, their "
    "probabilities averaged at the image's own size, gray ones at their own size; on the 80 "
    "validation images (12 colour), F1@0.5 mean per image all / gray / colour: scale 1 "
    "0.876 / 0.910 / 0.684, 1 + 0.7 0.875 / 0.904 / 0.710, 1 + 1.4 0.881 / 0.913 / 0.698, "
    "1 + 0.7 + 1.4 0.883 / 0.911 / 0.724, this rule 0.882 / 0.910 / 0.724 for 1.23x the "
    "prediction seconds of scale 1 over these images (`python benchmarks/bench_scale.py "
    "--model src/napari_unet/models/nuclei.safetensors --average`); `--scales 1` turns "
    "it off")


def write_shipped(model_path: Path, report, train_ids, test_ids, *, name: str) -> Path:
    """The shipped model file: float16 weights (loading casts to float32) + the metadata, less
    the per-step history (half a megabyte after an hour; the card has the figures); the
    post-processing stores :data:`SHIPPED_SCALES`."""
    from napari_unet.core.io import load_model, save_model
    from napari_unet.models import REGISTRY

    model, meta = load_model(model_path)
    meta = {k: v for k, v in meta.items()
            if k not in ("architecture", "napari_unet_version", "history")}
    if meta.get("training", {}).get("checkpoint_dir"):  # a folder of the machine it trained on
        meta["training"] = {**meta["training"], "checkpoint_dir": None}
    meta["shipped"] = {"name": name, "train_ids": train_ids, "test_ids": test_ids,
                       "card": REGISTRY[name].card}
    meta["postprocess"] = {**(meta.get("postprocess") or {}), "scales": SHIPPED_SCALES}
    return save_model(model.half(), REGISTRY[name].path, **meta)


PEER_HEADING = "## Against StarDist"


def peer_section(card: Path) -> list[str]:
    """The card's "Against StarDist" section, kept as it is when the card is written again: the
    peer's figures come from ``bench_peers.py`` on the same test images, not from this run."""
    if not card.is_file():
        return []
    text = card.read_text(encoding="utf-8")
    if PEER_HEADING not in text:
        return []
    section = text[text.index(PEER_HEADING):].split("\nTest ids:")[0].rstrip("\n")
    return [*section.split("\n"), ""]


def write_card(path: Path, report, train_ids, test_ids, *, name: str) -> Path:
    """A Markdown model card with the bioimage.io model fields, from this run's figures."""
    from napari_unet import __version__
    from napari_unet.core.io import read_metadata
    from napari_unet.models import REGISTRY

    meta = read_metadata(path)
    arch, tr = meta["architecture"], meta.get("training", {})
    shipped = report["shipped"]["test"]
    tta = report["shipped"].get("test_tta")

    command = "python benchmarks/bench_dsb.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in report["args"].items()
        if v not in ("None", "False"))
    card = REGISTRY[name].card_path
    training = (f"- training: {json.dumps(report.get('training'))}; settings: preset "
                f"{tr.get('preset')}, lr {tr.get('lr')}, batch {tr.get('batch_size')}, tile "
                f"{tr.get('tile')}, steps {tr.get('step')}, device {tr.get('device')}")
    if report["args"].get("trained_by") not in (None, "None"):  # a model file trained apart
        command = (f"{report['args']['trained_by']}; figures: "
                   + command.replace(f" --trained-by {report['args']['trained_by']}", ""))
    elif report["args"].get("rechoose") == "True" and card.is_file():  # the weights' own lines
        old = {line.split(":")[0]: line for line in card.read_text(encoding="utf-8").splitlines()
               if line.startswith(("- command: ", "- training: "))}
        training = old.get("- training", training)
        if "- command" in old:
            command = (old["- command"].removeprefix("- command: ").split("; post-processing")[0]
                       + f"; post-processing chosen again by: python benchmarks/bench_dsb.py "
                       f"--model {report['args']['model']} --rechoose --ship")

    def row(label, s):
        return (f"| {label} | {s['images']} | {s['f1']:.3f} | {s['ap50']:.3f} | "
                f"{s['f1_mean_per_image']:.3f} |" if s else f"| {label} | 0 | - | - | - |")

    lines = [
        f"# {name}: U-Net for 2D nuclei (napari-unet {__version__})", "",
        "bioimage.io model fields:", "",
        f"- name: napari-unet {name}",
        f"- description: {REGISTRY[name].description}",
        "- type: model; format: safetensors (float16 weights; loading casts to float32)",
        "- authors: napari-unet contributors",
        "- cite: Ronneberger, Fischer & Brox 2015, U-Net (arXiv 1505.04597); Caicedo et al. "
        "2019, Nature Methods 16:1247 (DSB2018 / BBBC038)",
        "- license: the weights CC0-derived data; code under the package's license",
        "- tags: nuclei, instance-segmentation, fluorescence, brightfield, 2d, unet",
        f"- inputs: one image, {arch['in_channels']} channel(s) "
        f"({'RGB' if arch['in_channels'] == 3 else 'gray; colour averaged'}), "
        f"normalisation {json.dumps(meta.get('normalization'))}",
        f"- outputs: {arch['num_classes']} class probabilities {meta.get('class_names')}; "
        "instance labels by napari-unet's post-processing",
        f"- architecture: {json.dumps(arch)}",
        f"- training_data: DSB2018 stage1_train (BBBC038, CC0), {len(train_ids)} images "
        f"(the '{report['args']['train_set']}' images of benchmarks/splits.json); figures on "
        f"its {len(test_ids)} {report['scored_on']} images, which no choice was made on",
        training,
        f"- command: {command}",
        f"- postprocess (chosen on the validation bands): {json.dumps(meta.get('postprocess'))}",
        *([f"- scales: {json.dumps(meta['postprocess']['scales'])}: {SHIPPED_SCALES_NOTE}"]
          if (meta.get("postprocess") or {}).get("scales") else []),
        "", "## Figures on the held-out test images (this file, through napari-unet predict)", "",
        "| images | n | F1@0.5 (pooled) | AP@0.5 (StarDist) | F1@0.5 (mean per image) |",
        "|---|---|---|---|---|",
        row("all", shipped["all"]), row("gray", shipped["gray"]),
        row("colour", shipped["colour"]), "",
        *(["With `--tta` (the image as it is and turned by 180°, averaged):", "",
           "| images | n | F1@0.5 (pooled) | AP@0.5 (StarDist) | F1@0.5 (mean per image) |",
           "|---|---|---|---|---|",
           row("all", tta["all"]), row("gray", tta["gray"]), row("colour", tta["colour"]), ""]
          if tta else []),
        *peer_section(card),
        f"Test ids: {', '.join(test_ids)}", "",
    ]
    card.write_text("\n".join(lines), encoding="utf-8")
    return card


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-set", default="dsb2018-train", choices=TRAIN_SETS,
                   help="training images (benchmarks/dsb_split.py)")
    p.add_argument("--eval", default="validation", choices=EVAL_SETS,
                   help="validation (every choice is made here) or test (scored once per "
                        "change, never used to choose)")
    p.add_argument("--colour", default="mean", choices=("mean", "hematoxylin"),
                   help="a colour image's gray for a 1-channel model")
    p.add_argument("--classes", type=int, default=2, choices=(2, 3))
    p.add_argument("--channels", default="gray", choices=("gray", "rgb"),
                   help="gray: colour images averaged; rgb: 3 channels, gray ones replicated")
    p.add_argument("--cpu-bf16", default="auto", choices=("auto", "on", "off"))
    p.add_argument("--time-limit", type=float, default=900, help="wall-clock training seconds")
    p.add_argument("--steps", type=int, help="step budget instead of (or before) the time")
    p.add_argument("--base-channels", type=int)
    p.add_argument("--depth", type=int, default=3, help="default: the CLI's CPU recipe")
    p.add_argument("--tile", type=int, default=156,
                   help="network input side (default: the CLI's CPU recipe)")
    p.add_argument("--batch-size", type=int, default=2,
                   help="patches per step (default: the CLI's CPU recipe)")
    p.add_argument("--lr", type=float,
                   help="learning rate (default: the CLI's CPU recipe for the run's length)")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="drop-out (default: the CLI's CPU recipe)")
    p.add_argument("--elastic-sigma", type=float,
                   help="elastic displacement std in pixels (default: AugmentConfig's)")
    p.add_argument("--scale", type=float, nargs=2, metavar=("LO", "HI"),
                   help="zoom range of the augmentation (default: AugmentConfig's 0.9 1.1)")
    p.add_argument("--w0", type=float, help="border weight w0 (default: TrainConfig's)")
    p.add_argument("--validate-every", type=int, default=1000)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speed", type=int, default=0, help="time N steps per mode (fp32, fp32 channels-last, bf16)")
    p.add_argument("--init", help="fine-tune from a model file or shipped name")
    p.add_argument("--model", help="evaluate this model file / shipped name, no training")
    p.add_argument("--max-train", type=int, help="use only the first N training images")
    p.add_argument("--max-test", type=int, help="evaluate only the first N test images")
    p.add_argument("--invert", choices=("auto", "off"),
                   help="input polarity rule of the model trained / evaluated (default: the "
                        "library's for new models, the --model's own)")
    p.add_argument("--tta", action="store_true",
                   help="predict with test-time augmentation (default: one pass, whatever the "
                        "model stores; 'stored_tta' in the report says what predict would do)")
    p.add_argument("--also-tta", action="store_true",
                   help="score the test images both without and with --tta (report 'test_tta')")
    p.add_argument("--also-no-seeds", action="store_true",
                   help="score the test images also with --seeds 0 (the same model without "
                        "its confident cores: 'test_no_seeds', 'test_tta_no_seeds')")
    p.add_argument("--rechoose", action="store_true",
                   help="with --model: choose its post-processing again with this code on the "
                        "training split's validation bands (with --ship: write it shipped)")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation (e.g. --speed)")
    p.add_argument("--save", type=Path, help="write the trained model here")
    p.add_argument("--ship", action="store_true",
                   help="write the shipped model (fp16) and its card into napari_unet/models")
    p.add_argument("--trained-by", help="with --model and --ship: the command that trained the "
                   "model file, written on the card")
    p.add_argument("--json", type=Path, help="write the report here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    train_ids, test_ids, _ = dsb_ids(args.train_set, args.eval)
    train_ids = train_ids[: args.max_train] if args.max_train else train_ids
    test_ids = test_ids[: args.max_test] if args.max_test else test_ids
    report = {"args": {k: str(v) for k, v in vars(args).items()},
              "split": {"train": len(train_ids), args.eval: len(test_ids)},
              "scored_on": args.eval,
              "machine": platform.processor() or platform.machine()}
    try:
        import os
        report["load_before"] = os.getloadavg()
    except OSError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model:
            from napari_unet.models import resolve_model

            model_path = resolve_model(args.model)
            from napari_unet.core.io import read_metadata

            in_ch = read_metadata(model_path)["architecture"]["in_channels"]
            args.channels = "rgb" if in_ch == 3 else "gray"
            if args.rechoose:
                model_path = rechoose(model_path, load(train_ids, args.channels, args.colour),
                                      tmp / "model_rechosen.safetensors")
            if args.invert:  # a copy of the model with the rule asked for
                from napari_unet.core.io import load_model, save_model

                model, meta = load_model(model_path)
                meta = {k: v for k, v in meta.items()
                        if k not in ("architecture", "napari_unet_version")}
                meta["normalization"] = with_invert(meta.get("normalization"), args.invert)
                model_path = save_model(model, tmp / "model_invert.safetensors", **meta)
        else:
            pairs = load(train_ids, args.channels, args.colour)
            trainer, report["training"] = train(args, pairs, log)
            model_path = args.save or tmp / "model.safetensors"
            trainer.save(model_path)
        test = load(test_ids, args.channels, args.colour)
        from napari_unet.core.io import read_metadata
        from napari_unet.core.predict.postprocess import stored_tta

        meta = read_metadata(model_path)
        report["normalization"] = meta.get("normalization")
        report["postprocess"] = meta.get("postprocess")
        # what predict does by default: "test_tta" if the model stores tta, else "test"
        report["stored_tta"] = stored_tta(meta)
        if not args.no_eval:
            report["test"] = evaluate(model_path, test, tmp / "eval", args.tta)
            if args.also_tta and not args.tta:
                report["test_tta"] = evaluate(model_path, test, tmp / "eval_tta", True)
            if args.also_no_seeds:  # the same model without its confident cores
                off = ["--seeds", "0"]
                report["test_no_seeds"] = evaluate(model_path, test, tmp / "e_ns", args.tta, off)
                if args.also_tta and not args.tta:
                    report["test_tta_no_seeds"] = evaluate(model_path, test, tmp / "e_tns",
                                                           True, off)
        if args.ship:
            shipped = write_shipped(model_path, report, train_ids, test_ids, name="nuclei")
            report["shipped"] = {"path": str(shipped),
                                 "test": evaluate(shipped, test, tmp / "eval_shipped", args.tta)}
            if not args.tta:  # the card gives both: one pass and test-time augmentation
                report["shipped"]["test_tta"] = evaluate(shipped, test, tmp / "eval_shipped_tta",
                                                         True)
            write_card(shipped, report, train_ids, test_ids, name="nuclei")
    try:
        import os
        report["load_after"] = os.getloadavg()
    except OSError:
        pass
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
