"""Run the main job on bundled sample data: train a U-Net briefly, segment, measure, overlay.

``--data synthetic`` (default): train on one synthetic image of touching cells and evaluate on
another one (a different seed) that training never saw. ``--data nuclei``: the bundled real
DSB 2018 nuclei image; only its left three quarters count as annotated for training, and the
right quarter is evaluated. Writes the model, the predicted labels and ``overlay.png`` (image in
gray, predicted cell outlines in red, true outlines in green) to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--out", type=Path, default=Path("demo_output"), help="output folder")
    a("--data", choices=("synthetic", "nuclei"), default="synthetic", help="sample data")
    a("--seconds", type=float, default=90.0, help="training time budget (default 90 s)")
    a("--steps", type=int, default=1500, help="step budget (whichever ends first)")
    a("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    a("--seed", type=int, default=0, help="random seed")
    a("--gui", action="store_true",
      help="open napari with the sample data (--data) and the four widgets docked instead")


def _data(kind: str, seed: int):
    """(train image, train labels, annotated or None, eval image, eval labels, eval region)."""
    import numpy as np

    from napari_unet.core.synthetic import synthetic_cells

    if kind == "synthetic":
        image, labels = synthetic_cells((256, 256), seed=seed)
        test_image, test_labels = synthetic_cells((256, 256), seed=seed + 1)
        return image, labels, None, test_image, test_labels, np.s_[:, :]
    from napari_unet.sample_data import load_nuclei

    image, labels = load_nuclei()[:2]
    w = image.shape[1]
    annotated = np.zeros(labels.shape, bool)
    annotated[:, : 3 * w // 4] = True
    return image, labels, annotated, image, labels, np.s_[:, 3 * w // 4 :]


def _overlay(image, pred, true):
    import numpy as np
    from skimage.segmentation import find_boundaries

    from napari_unet.core.normalize import normalize

    g = (np.clip(normalize(image), 0, 1) * 255).astype(np.uint8)
    rgb = np.stack([g, g, g], axis=-1)
    rgb[find_boundaries(true, mode="inner")] = (0, 200, 0)
    rgb[find_boundaries(pred, mode="inner")] = (255, 40, 40)
    return rgb


def _display_problem() -> str | None:
    """Why no window can open here (a one-line message), or None if a display looks available."""
    import os

    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        or os.environ.get("QT_QPA_PLATFORM")
    ):
        return ("demo --gui: no display found (DISPLAY/WAYLAND_DISPLAY unset); run it on a desktop, "
                "with ssh -X, or under xvfb-run; without a screen use plain 'napari-unet demo'")
    return None


def run_gui(args: argparse.Namespace) -> int:
    """Open napari with the sample data and the four widgets docked; blocks until closed.

    napari runs in a process of its own (``python -m napari_unet.widgets``): the command line
    never imports Qt."""
    import importlib.util
    import subprocess

    from napari_unet.cli import CLIError

    problem = _display_problem()
    if problem:
        raise CLIError(problem)
    if importlib.util.find_spec("napari") is None:
        raise CLIError("demo --gui: napari is not installed; pip install 'napari[pyqt6]'")
    sample = {"synthetic": "touching_cells", "nuclei": "nuclei"}[args.data]
    return subprocess.run([sys.executable, "-m", "napari_unet.widgets", "--sample", sample],
                          check=False).returncode


def run(args: argparse.Namespace) -> int:
    if getattr(args, "gui", False):
        return run_gui(args)
    import numpy as np

    from napari_unet.commands.files import write_image
    from napari_unet.core.metrics import evaluate_segmentation
    from napari_unet.core.predict.segment import segment
    from napari_unet.core.training.recipes import config_for_device
    from napari_unet.core.training.trainer import Trainer

    t_start = time.perf_counter()
    image, labels, annotated, test_image, test_labels, region = _data(args.data, args.seed)
    cfg = config_for_device(args.device, steps=args.steps, time_limit=args.seconds,
                          depth=3, lr=2e-3, batch_size=2, tile=156, dropout=0.0,
                          validate_every=0, val_fraction=0.0, seed=args.seed)
    trainer = Trainer([(image, labels, annotated)], cfg)
    print(f"training a U-Net (depth {cfg.depth}, {cfg.base_channels} base channels) on "
          f"{trainer.device} for at most {args.seconds:g} s / {args.steps} steps "
          f"({args.data} data, image {image.shape})...", file=sys.stderr, flush=True)
    last = None
    for event in trainer.run():
        if event.kind == "step" and (event.step % 25 == 0 or event.step == 1):
            print(f"  step {event.step:4d}  loss {event.loss:.4f}  {event.steps_per_s:.1f} "
                  "steps/s", file=sys.stderr, flush=True)
        last = event
    model, meta = trainer.snapshot()
    t_pred = time.perf_counter()
    _prob, pred = segment(model, test_image, metadata=meta, device=trainer.device)
    t_pred = time.perf_counter() - t_pred
    m = evaluate_segmentation(pred[region], test_labels[region])

    args.out.mkdir(parents=True, exist_ok=True)
    model_path = trainer.save(args.out / "model.safetensors")
    write_image(args.out / "image.tif", np.asarray(test_image))
    write_image(args.out / "labels_true.tif", np.asarray(test_labels, np.int32))
    write_image(args.out / "labels_pred.tif", pred)
    write_image(args.out / "overlay.png", _overlay(test_image, pred, test_labels))
    where = ("a held-out synthetic image (other seed)" if args.data == "synthetic"
             else "the right quarter of the nuclei image (not annotated for training)")
    print(f"trained {last.step} steps in {trainer.elapsed:.0f} s (final loss {last.loss:.4f}); "
          f"predicted {test_image.shape} in {t_pred:.1f} s")
    print(f"on {where}: foreground IoU {m['iou']:.3f}, pixel error {m['pixel_error']:.3f}, "
          f"Rand error {m['rand_error']:.3f}, instance F1@0.5 {m['instance_f1']:.3f} "
          f"({m['n_pred']} cells found, {m['n_true']} true)")
    print(f"wrote {model_path}, labels_pred.tif and overlay.png (red: predicted outlines, green: "
          f"true) to {args.out}/ in {time.perf_counter() - t_start:.0f} s total")
    return 0
