"""``napari-unet train --run DIR``: train from a run folder as written (see core/runs.py)."""

from __future__ import annotations

import argparse

from napari_unet.cli import CLIError


def check_args(args: argparse.Namespace) -> None:
    """Check ``--run`` and the options that go with it; ``--out`` defaults to RUN/model.safetensors."""
    if not (args.run / "run.json").is_file():
        raise CLIError(
            f"--run: {str(args.run)!r} is not a run folder (no run.json); expected a folder "
            "written by the Train widget or napari_unet.core.runs.write_run"
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


def make_trainer(args: argparse.Namespace):
    """The run's Trainer (settings as written; ``--device`` other than auto overrides)."""
    from napari_unet.core.runs import trainer_from_run

    changes = {} if args.device == "auto" else {"device": args.device}
    return trainer_from_run(args.run, **changes)


def recorded(run_dir, events):
    """The trainer's events, each appended to the run's metrics.jsonl; the status at the end."""
    from napari_unet.core.runs import record_events

    return record_events(run_dir, events)
