"""Train a U-Net on image/label files (TIFF/PNG) and save a ``.safetensors`` model.

Images and labels are folders or lists of files, paired by name, never by position
(:func:`napari_unet.commands.pairing.pair_paths`). Labels are instance ids or binary masks
(e.g. 255 = cell); ``--annotated`` masks limit the loss to annotated pixels. ``--sparse`` reads
the labels as a few painted cells, as the GUI does (:func:`napari_unet.core.targets.counted_area`),
with optional ``--background`` masks. Checkpoints
(``last``/``best``) go to ``--checkpoint-dir`` (default ``MODEL.checkpoints/``); ``--resume``
continues a stopped run from there, bit for bit
as if it had not stopped, with the checkpoint's architecture (a different --depth,
--base-channels or --classes is refused). Ctrl-C, SIGTERM (SLURM, docker stop, kill) and SIGHUP
stop at the next step boundary and write the last checkpoint and the model (a second Ctrl-C stops
at once). An existing --out model or checkpoint folder is never replaced without --force (except
by the run that --resume continues).
``--events -`` reports every event as a JSON line on stdout and ``--control -`` takes
pause/resume/stop/checkpoint lines on stdin (docs/training-events.md): how napari's Train widget
drives a training in a child process.

Volumes: ``--ndim 3`` trains the 3D U-Net (Çiçek et al. 2016) on TIFF stacks ``(Z, Y, X)``
(images/labels folders as in 2D), ``--spacing Z Y X`` gives the voxel size (anisotropic border
weights and pooling). Sparse slices: ``--annotated-slices z=5,20,35`` says that the labels are
complete on these planes (every cell on them labelled) and unknown everywhere else (weight 0),
the same planes for every volume; per-volume masks of annotated voxels go in ``--annotated``
(any planes, xz/yz too). Without ``--ndim 3`` a stack is refused, naming the option.

``--run DIR`` trains from a run folder (:mod:`napari_unet.engine.runs`, e.g. one written by the
Train widget) as written: its data files, settings, seed and parent model; checkpoints, the
metrics history (``metrics.jsonl``), the status and ``model.safetensors`` go into it.

Several processes (one per GPU, or CPU processes with gloo)::

    torchrun --nproc_per_node=4 -m napari_unet train --images ... --batch-size 8 ...

``--batch-size`` is then the global batch (a multiple of the number of processes); rank 0
writes the model, the checkpoints and the progress bar, the other ranks stay silent.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from pathlib import Path

from napari_unet.commands.options import (
    add_config_arguments,
    config_choices,
)
from napari_unet.commands.train_data import (
    check_outputs,
    check_paths,
    check_resume_architecture,
    default_checkpoint_dir,
    read_training_pairs,
    source_architecture,
)
from napari_unet.core.normalize import COLOUR_RULES, DEFAULT_COLOUR_RULE
from napari_unet.engine.session import TrainSession
from napari_unet.errors import format_error, is_no_space

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--images", nargs="+", help="image files or folders (TIFF/PNG); required without --run")
    a("--labels", nargs="+", help="label files or folders, one per image; required without --run")
    a("--annotated", nargs="+", help="masks of the annotated pixels (non-zero), one per image")
    a("--sparse", action="store_true",
      help="the labels are a few painted cells, as in the GUI: only the painted cells, a band "
           "around them (or the --annotated regions, complete inside) and --background count; "
           "without it the labels are complete (every unlabelled pixel is background)")
    a("--background", nargs="+",
      help="masks of pixels marked as background (non-zero), paired with the images by name "
           "like --labels; they count in the loss wherever they are")
    a("--out", type=Path,
      help="model file to write (.safetensors); required without --run (default RUN/model.safetensors)")
    # --run-folder: the same option under torchrun, whose parser takes "--run" for its --run-path
    a("--run", "--run-folder", type=Path,
      help="train from this run folder as written (data, settings, parent)")
    a("--annotated-slices", nargs="+", metavar="AXIS=I,J",
      help="with --ndim 3: the planes whose labels are complete, e.g. z=5,20,35 (xy slices; "
           "y=... xz, x=... yz; a bare index is z); every other voxel is ignored (weight 0). "
           "The same planes for every volume; use --annotated masks for per-volume planes")
    a("--gray", nargs="?", const=DEFAULT_COLOUR_RULE, choices=COLOUR_RULES, metavar="RULE",
      help="train a one-channel model on colour images, turned gray by RULE (stored with the "
           "model, which predict applies to colour input): mean (default): the mean of the "
           "channels; stain: the hematoxylin stain of a colour deconvolution; auto: stain for a "
           "brightfield image (H&E, IHC), the mean otherwise")
    a("--channel-axis", type=int,
      help="axis of the colour channels in 3D image files; without it a TIFF of 3 or 4 planes "
           "is a stack and refused, not taken as colour (RGB/RGBA TIFF and PNG files say so)")
    a("--force", action="store_true",
      help="replace an existing --out model and its checkpoint folder")
    a("--resume", type=Path, help="checkpoint (file or folder) of a run to continue")
    a("--init", type=Path,
      help="model file to fine-tune from, or a shipped model's name (e.g. nuclei)")
    a("--events", metavar="-|FILE",
      help="write one JSON object per line per training event to stdout (-) or FILE; the "
           "last line is always done, stopped or error (docs/training-events.md)")
    a("--control", metavar="-", choices=("-",),
      help="read pause, resume, stop, checkpoint lines from stdin; end of input stops")
    add_config_arguments(parser)


def plan_run(args: argparse.Namespace, pairs=None, *, processes: int = 1):
    """The plan of the options given (:func:`napari_unet.core.training.plan`: the recipe for
    the device and data, the rate by run length, fine-tuning, the batch rule and, with
    ``pairs``, the automatic tile and the memory check). A refusal names the setting (``tile:
    ...``), which the error formatter turns into the option (:func:`napari_unet.errors.
    format_error`)."""
    from napari_unet.core.training.plan import DataSummary, plan

    choices = config_choices(args)
    if args.resume is not None:  # the run's own settings where none is given: the same run
        _keep_run_settings(choices, args.resume)
    choices.setdefault("checkpoint_dir", default_checkpoint_dir(args))
    return plan(choices, None if pairs is None else DataSummary.of(pairs),
                device=args.device or "auto", processes=processes,
                architecture=source_architecture(args),
                # --lr with --init is the fine-tuning rate itself
                fine_tuning=args.init is not None and args.resume is None and args.lr is None)


def _keep_run_settings(choices: dict, resume) -> None:
    """Fill ``choices`` with the settings of the run that the checkpoint ``resume`` continues,
    where none is given (as :class:`~napari_unet.core.training.TrainConfig` holds them)."""
    from napari_unet.core.training.checkpoint import stored_settings
    from napari_unet.engine.training import config_from_settings

    stored = stored_settings(resume)
    try:
        config = config_from_settings(stored)
    except (TypeError, ValueError):
        return  # the checkpoint's own checks say what is wrong with it
    for key in stored:
        value = getattr(config, key, None)
        if value is not None:
            choices.setdefault(key, value)


def build_config(args: argparse.Namespace, pairs=None, *, processes: int = 1):
    """The planned TrainConfig of the options given (:func:`plan_run`)."""
    return plan_run(args, pairs, processes=processes).config


def _check_processes(args: argparse.Namespace, world: int) -> None:
    """The batch rule before any file is read (under torchrun a refusal is an error event)."""
    from napari_unet.core.training.plan import plan

    if args.run is not None and (args.run / "settings.json").is_file():  # the run's own batch
        import json

        from napari_unet.engine.training import config_from_settings

        settings = json.loads((args.run / "settings.json").read_text(encoding="utf-8"))
        config = config_from_settings(settings)
        plan(config, processes=world, check_memory=False)
    else:
        build_config(args, processes=world)


def run(args: argparse.Namespace) -> int:
    from napari_unet.core.training import distributed as ddp

    env = ddp.dist_env()
    if env.is_distributed and env.rank != 0:  # only rank 0 reports
        logging.getLogger().setLevel(logging.WARNING)
    session = TrainSession.from_args(args, active=env.rank == 0)
    try:
        if env.is_distributed:  # a refusal here is an error event too
            _check_processes(args, env.world_size)
        return _run(args, main=env.rank == 0, session=session)
    except BaseException as err:
        session.fail(err)
        raise
    finally:
        session.close()
        ddp.cleanup()


def _run(args: argparse.Namespace, *, main: bool, session: TrainSession) -> int:
    from napari_unet.core.training import distributed as ddp

    check_paths(args)
    session.fallback_settings(args)
    if args.run is not None:
        from napari_unet.engine.training import trainer_from_run

        # the run's settings as written; a --device other than auto overrides its device
        trainer = trainer_from_run(args.run, **({} if args.device in (None, "auto") else
                                                {"device": args.device}))
    else:
        config = build_config(args, processes=ddp.get_world_size())  # before any file is read
        check_resume_architecture(args)
        if main:
            check_outputs(args, config)
        from napari_unet.core.training.trainer import Trainer

        pairs = read_training_pairs(args, config, main=main)
        trainer = Trainer(pairs, config, init_model=args.init, resume=args.resume,
                          force_resume=args.force)
    config = trainer.config  # a resumed or fine-tuned model's architecture
    session.started(trainer, model=args.out)
    if main:
        print(_describe(trainer, config), file=sys.stderr)
    with _StopOnSignals(session) as signals:
        try:
            status, last_val = _drive(trainer, config, session, main=main, run_dir=args.run)
        except OSError as err:
            if not (main and is_no_space(err)):
                raise
            raise _no_space_left(err, trainer, args) from None
    code = 130 if status == "interrupted" else signals.exit_status
    if not main:  # rank 0 writes the model and reports
        if status != "interrupted":
            ddp.barrier()
        return code
    try:
        path = trainer.save(args.out)
    except OSError as err:
        if not is_no_space(err):
            raise
        raise _no_space_left(err, trainer, args, model_failed=True) from None
    if status != "interrupted":
        ddp.barrier()
    _report(trainer, config, f"stopped by {signals.received}" if signals.received else status,
            last_val, path)
    session.finish(status, model=path, metrics=last_val)
    return code


def _no_space_left(err: OSError, trainer, args, *, model_failed: bool = False) -> OSError:
    """The one line of a run that a full disk stopped: what had no room, whether the model
    could still be written (it is smaller than a checkpoint) and how to go on."""
    from napari_unet.core.training.checkpoint import state_path

    done = "the model could not be written"
    if not model_failed:
        try:
            done = f"the model of step {trainer.step} is written to {trainer.save(args.out)}"
        except OSError:
            done += " either"
    ckpt_dir = trainer.config.checkpoint_dir
    if ckpt_dir is not None and state_path(Path(ckpt_dir) / "last.safetensors").is_file():
        then = f"then continue with --resume {ckpt_dir}"
    else:
        then = "then run again (add --force to replace the model)"
    return OSError(errno.ENOSPC, f"{format_error(err)}; {done}; {then}", err.filename)


class _StopOnSignals:
    """SIGTERM, SIGHUP and the first Ctrl-C ask the session's trainer to stop at the next step
    boundary (it then writes the last checkpoint; the caller writes the model); a second Ctrl-C
    raises KeyboardInterrupt at once. The exit status is 128 + the signal's number, as shells
    report; the ``stopped`` event's reason is the signal's name."""

    def __init__(self, session) -> None:
        self.session, self.received, self.exit_status, self._old = session, None, 0, {}

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self  # signals can only be caught on the main thread
        for name in ("SIGTERM", "SIGHUP", "SIGINT"):
            sig = getattr(signal, name, None)
            if sig is not None:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        import signal

        name = signal.Signals(signum).name
        if self.received == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received is None:
            self.received, self.exit_status = name, 128 + signum
            logger.warning("%s: stopping at the next step and writing the last checkpoint", name)
        self.session.request_stop(name)

    def __exit__(self, *exc) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)


def _describe(trainer, config) -> str:
    """The one line printed before training: device, data, network, budget."""
    world = trainer.world_size
    return (
        f"training on {trainer.device}"
        + (f" and {world - 1} more process(es)" if world > 1 else "")
        + f": {len(trainer.pairs)} image(s), U-Net depth "
        f"{trainer.model.depth} base {trainer.model.base_channels}, tile {trainer.tile} -> "
        f"{trainer.out_tile}, batch {trainer.batch_size}"
        + (f" ({trainer.batch_size // world} per process)" if world > 1 else "")
        + f", {config.preset} preset, lr {trainer.lr:g}, "
        + " / ".join(([f"{config.steps} steps"] if config.steps else [])
                     + ([f"{config.time_limit:g} s"] if config.time_limit else []))
        + f"; target {trainer.target} ({trainer.target_reason})"
    )


def _drive(trainer, config, session, *, main: bool, run_dir=None) -> tuple[str, dict | None]:
    """Run the training generator with a progress bar; returns (status, last validation)."""
    from tqdm import tqdm

    total = config.steps if config.steps else None
    bar = tqdm(total=total, initial=trainer.step, unit="step", file=sys.stderr,
               dynamic_ncols=True, disable=None if main else True)
    last_val = None
    status = "done"
    events = session.drive(trainer)
    if run_dir is not None and main:
        from napari_unet.engine.training import record_events

        events = record_events(run_dir, events)  # each to metrics.jsonl, the status at the end
    try:
        for event in events:
            if event.kind == "step":
                bar.update(event.step - bar.n)
                post = {"loss": f"{event.loss:.4f}", "lr": f"{event.lr:.2g}"}
                if last_val:
                    post["val_rand"] = f"{last_val['rand_error']:.4f}"
                bar.set_postfix(post, refresh=False)
            elif event.kind == "validation":
                last_val = event.metrics
                logger.info("step %d validation: %s", event.step,
                            ", ".join(f"{k} {v:.4f}" for k, v in event.metrics.items()))
            elif event.kind == "kept":  # a fine-tuning: the previous or the trained model
                tqdm.write(event.message, file=sys.stderr)
            elif event.kind in ("done", "stopped"):
                status = event.kind
    except KeyboardInterrupt:
        events.close()  # saves the last checkpoint
        status = "interrupted"
    finally:
        bar.close()
    return status, last_val


def _report(trainer, config, status: str, last_val: dict | None, path) -> None:
    """The closing lines: status, steps, model file, last validation, checkpoint folder."""
    msg = f"{status} after {trainer.step} steps ({trainer.elapsed:.0f} s); model: {path}"
    if last_val:
        msg += "; validation " + ", ".join(f"{k} {v:.4f}" for k, v in last_val.items())
    print(msg)
    if config.checkpoint_dir is not None:
        print(f"checkpoints: {config.checkpoint_dir} (continue with --resume)")
