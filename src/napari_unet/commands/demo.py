"""Run the main job on embedded sample data: build the paper's U-Net on a synthetic image of touching cells.

Training and prediction arrive with their own modules; until then the demo says what it did.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import tifffile
    import torch

    from napari_unet.core.model import UNet
    from napari_unet.core.synthetic import synthetic_cells

    image, labels = synthetic_cells((256, 256), seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(args.out / "image.tif", image)
    tifffile.imwrite(args.out / "labels.tif", labels)
    net = UNet()
    n_params = sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        out = UNet(depth=4, base_channels=8)(torch.zeros(1, 1, 572, 572))
    print(f"synthetic image {image.shape} with {int(labels.max())} cells -> {args.out}/")
    print(f"paper U-Net: {n_params:,} parameters, 572x572 -> {tuple(out.shape[-2:])}")
    print("training and prediction are not implemented yet: nothing was segmented.")
    return 0 if np.isfinite(out.numpy()).all() else 1
