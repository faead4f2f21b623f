"""``napari-unet train --run DIR``: the options that go with a run folder
(:mod:`napari_unet.engine.runs`), checked before anything is read."""

from __future__ import annotations

import argparse

from napari_unet.cli import CLIError


def check_args(args: argparse.Namespace) -> None:
    """Check ``--run`` and the options that go with it; ``--out`` defaults to RUN/model.safetensors."""
    if not (args.run / "run.json").is_file():
        raise CLIError(
            f"--run: {str(args.run)!r} is not a run folder (no run.json); expected a folder "
            "written by the Train widget or napari_unet.engine.runs.write_run"
        )
    clash = [name for name in ("images", "labels", "annotated", "background", "init", "resume")
             if getattr(args, name, None) is not None]
    if getattr(args, "sparse", False):  # the run records the rule of each pair
        clash.append("sparse")
    if clash:
        raise CLIError(
            "--run: the run folder holds its own data and parent model; drop "
            + ", ".join(f"--{n}" for n in clash)
        )
    if args.out is None:
        args.out = args.run / "model.safetensors"
