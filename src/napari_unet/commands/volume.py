"""``--ndim`` / ``--spacing`` of ``predict`` and ``evaluate``: volume or plane by plane, stated.

A 3D model predicts a (Z, Y, X) TIFF stack as a volume; a 2D model predicts it plane by plane
(as before 3D models existed). ``--ndim`` defaults to the model's; asking a 2D model for a
volume (or a 3D model for planes) is an error that names the fix. ``--spacing Z Y X`` (the voxel
size for the anisotropic post-processing) defaults to the spacing stored with the model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_unet.cli import CLIError


def add_volume_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options for Z-stacks (``--ndim`` and the voxel size) to a parser."""
    parser.add_argument(
        "--ndim", type=int, choices=(2, 3), default=None,
        help="3: predict (Z, Y, X) stacks as volumes (a 3D model); 2: plane by plane (a 2D "
             "model); default: the model's")
    parser.add_argument(
        "--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), default=None,
        help="voxel size of 3D stacks for the post-processing (default: stored with the model)")


def resolve_mode(args: argparse.Namespace, model, meta: dict | None) -> tuple[int, tuple | None]:
    """(ndim, spacing) for this run; a CLIError with the fix for a model/--ndim mismatch."""
    from napari_unet.core.predict.segment import stored_spacing

    ndim = getattr(args, "ndim", None) or model.ndim
    if ndim != model.ndim:
        if model.ndim == 2:
            raise CLIError(
                f"--ndim 3: {args.model} is a 2D model, it cannot predict a volume as a volume; "
                "drop --ndim (or give --ndim 2) to predict the stack plane by plane, or train a "
                "3D model with `napari-unet train --ndim 3`"
            )
        raise CLIError(
            f"--ndim 2: {args.model} is a 3D model, it predicts volumes; drop --ndim (or give "
            "--ndim 3), or use a 2D model to predict plane by plane"
        )
    spacing = getattr(args, "spacing", None)
    if spacing is not None:
        if ndim != 3:
            raise CLIError("--spacing: only for 3D models (volumes); drop it for a 2D model")
        if min(spacing) <= 0:
            raise CLIError(f"--spacing: expected three positive voxel sizes, got {spacing}")
        return ndim, tuple(float(s) for s in spacing)
    return ndim, (stored_spacing(meta, 3) if ndim == 3 else None)


def describe(ndim: int, spacing) -> str:
    """The mode in words, printed by the commands."""
    if ndim == 3:
        return "as volumes (3D model" + (f", spacing {tuple(spacing)})" if spacing else ")")
    return "plane by plane (2D model; a (Z, Y, X) stack is a stack of planes)"


def read_volume(path: Path, model, channel_axis: int | None = None):
    """(array, channel_axis) of a (Z, Y, X) TIFF stack, or (Z, Y, X, C) etc. with
    ``channel_axis``, for a 3D model; a CLIError naming what came otherwise."""
    import tifffile

    if path.suffix.lower() not in (".tif", ".tiff"):
        raise CLIError(f"{path}: a 3D model reads (Z, Y, X) TIFF stacks, got a {path.suffix} file")
    try:
        vol = np.squeeze(tifffile.imread(path))
    except Exception as err:  # tifffile raises various types for broken files
        raise CLIError(f"{path}: cannot read it as a TIFF ({type(err).__name__}: {err})") from None
    want = 3 + (channel_axis is not None or model.in_channels > 1)
    if vol.ndim != want:
        need = "(Z, Y, X)" if want == 3 else "(Z, Y, X) with a channel axis (--channel-axis)"
        raise CLIError(
            f"{path}: expected a {need} stack for the 3D model with {model.in_channels} input "
            f"channel(s), got shape {vol.shape}"
            + ("; a 2D image needs a 2D model" if vol.ndim == 2 else "")
        )
    if channel_axis is None and model.in_channels > 1:
        channel_axis = -1
    if channel_axis is not None and vol.shape[channel_axis] != model.in_channels:
        raise CLIError(
            f"{path}: the stack has {vol.shape[channel_axis]} channel(s) at axis {channel_axis} "
            f"but the model expects {model.in_channels}"
        )
    return vol, channel_axis
