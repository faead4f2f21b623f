"""What ``napari-unet train`` reads and checks before it trains: the paths and options of the
files (one-line errors before anything is read), the model a run continues, the image/label
pairs and their annotated slices."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from napari_unet.cli import CLIError
from napari_unet.commands.options import model_file

__all__ = [
    "check_outputs",
    "check_paths",
    "check_resume_architecture",
    "check_run_folder",
    "default_checkpoint_dir",
    "parse_slices",
    "read_training_pairs",
    "source_architecture",
]


def source_architecture(args: argparse.Namespace) -> dict | None:
    """The ``architecture`` metadata of the --resume checkpoint (its ``last`` file in a folder)
    or the --init model file; None without one, or for a file that is not ours or that cannot
    be read (a plain PyTorch state dict: the Trainer reads it and says what is wrong)."""
    source = getattr(args, "resume", None) or getattr(args, "init", None)
    if source is None:
        return None
    path = Path(source)
    path = path / "last.safetensors" if path.is_dir() else path
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from napari_unet.core.io.model_file import read_metadata

    try:
        arch = read_metadata(path).get("architecture")
    except (ValueError, OSError):
        return None
    return arch if isinstance(arch, dict) and "depth" in arch else None


def parse_slices(specs, shape) -> np.ndarray:
    """``--annotated-slices`` specs (``z=5,20``, ``y=3``, ``x=..``, a bare index is z) → the
    bool mask of the annotated planes of a volume of ``shape``.

    Examples
    --------
    >>> m = parse_slices(["z=1,3", "x=0"], (4, 5, 6))
    >>> int(m.sum()), bool(m[1].all()), bool(m[2, :, 0].all()), bool(m[2, 1, 1])
    (70, True, True, False)
    """
    from napari_unet.core.targets.sparse import slices_mask

    axes: dict[str, list[int]] = {"z": [], "y": [], "x": []}
    for spec in specs:
        axis, sep, rest = str(spec).partition("=")
        if not sep:
            axis, rest = "z", spec
        axis = axis.strip().lower()
        try:
            values = [int(v) for v in rest.split(",") if v.strip()]
        except ValueError:
            values = None
        if axis not in axes or not values:
            raise CLIError(f"--annotated-slices: expected AXIS=I[,J...] with AXIS z, y or x (a "
                           f"bare index is z), e.g. z=5,20,35; got {spec!r}")
        axes[axis] += values
    try:
        return slices_mask(shape, **axes)
    except ValueError as err:
        raise CLIError(f"--annotated-slices: {err}") from None


def default_checkpoint_dir(args: argparse.Namespace) -> Path | None:
    """Where the checkpoints go without ``--checkpoint-dir``: the ``--resume`` folder, else
    ``MODEL.checkpoints`` beside ``--out`` (None without one: ``check_paths`` says so)."""
    if args.resume is not None:  # keep writing where the resumed run was
        return args.resume if args.resume.is_dir() else args.resume.parent
    return None if args.out is None else args.out.with_name(args.out.stem + ".checkpoints")


def check_outputs(args: argparse.Namespace, config) -> None:
    """Refuse to replace an earlier model or checkpoints without --force.

    With --resume, the model that the resumed run wrote (its metadata names the same
    checkpoint folder) and that folder itself are the run's own files and are updated."""
    from napari_unet.core.io.model_file import read_metadata
    from napari_unet.core.training.checkpoint import checkpoint_dir_of

    if args.force:
        return
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir is not None else None
    resumed = None
    if args.resume is not None:
        resumed = args.resume if args.resume.is_dir() else args.resume.parent
    if args.out.exists():
        own = False
        if resumed is not None:
            try:  # stored relative to the model file: the run folder may have moved
                own = resumed.resolve() in checkpoint_dir_of(read_metadata(args.out), args.out)
            except (ValueError, OSError):
                own = False
        if not own:
            raise CLIError(
                f"--out: {str(args.out)!r} exists and would be replaced; choose another file "
                "name, or add --force to replace it"
            )
    if ckpt_dir is not None and any((ckpt_dir / name).exists() for name in (
            "last.safetensors", "last.state.safetensors")):
        if resumed is None or ckpt_dir.resolve() != resumed.resolve():
            raise CLIError(
                f"--checkpoint-dir: {str(ckpt_dir)!r} holds the checkpoints of an earlier run; "
                "continue it with --resume, choose another --out/--checkpoint-dir, or add --force"
            )


def check_resume_architecture(args: argparse.Namespace) -> None:
    """--resume/--init with a --depth, --base-channels or --classes that differs from the
    checkpoint's is refused: the checkpoint's weights fix the architecture."""
    arch = source_architecture(args)
    if arch is None:
        return
    source = args.resume if args.resume is not None else args.init
    flag = "--resume" if args.resume is not None else "--init"
    for option, key, given in (("--depth", "depth", args.depth),
                               ("--base-channels", "base_channels", args.base_channels),
                               ("--classes", "num_classes", args.num_classes)):
        if given is not None and arch.get(key) != given:
            raise CLIError(
                f"{option}: {flag} {str(source)!r} has {key} {arch.get(key)}, got {given}; "
                f"a run continues with its own architecture: drop {option}, or train a new "
                "model without " + flag
            )


def _check_resume_is_a_checkpoint(resume: Path) -> None:
    """--resume given a model file whose checkpoint lies elsewhere (the final model of a run):
    the run's checkpoint folder is the fix."""
    from napari_unet.core.io.model_file import read_metadata
    from napari_unet.core.training.checkpoint import checkpoint_dir_of, checkpoint_files

    if resume.is_dir() or checkpoint_files(resume)[1].is_file():
        return
    try:
        folders = [d for d in checkpoint_dir_of(read_metadata(resume), resume) if d.is_dir()]
    except (ValueError, OSError):
        return  # not a model file: the resume says what it is missing
    if folders and folders[0] != resume.resolve().parent:
        where = os.path.relpath(folders[0])
        raise CLIError(f"--resume: {str(resume)!r} is a model, not a checkpoint; continue its "
                       f"run with --resume {where}, or fine-tune it with --init {resume}")


def check_paths(args: argparse.Namespace) -> None:
    """One-line errors for --run, --out, --resume and --init before anything is read."""
    if args.run is not None:
        check_run_folder(args)
    elif args.images is None or args.labels is None or args.out is None:
        raise CLIError("--images, --labels and --out are required (or give --run DIR)")
    if args.out.suffix != ".safetensors":
        raise CLIError(f"--out: expected a .safetensors file name, got {str(args.out)!r}")
    if args.resume is not None and not args.resume.exists():
        raise CLIError(f"--resume: {str(args.resume)!r} does not exist")
    if args.resume is not None:
        _check_resume_is_a_checkpoint(args.resume)
    if args.init is not None:
        args.init = model_file(args.init, "--init")
    if args.init is not None and not args.init.is_file():
        raise CLIError(f"--init: {str(args.init)!r} does not exist")


def read_training_pairs(args: argparse.Namespace, config, *, main: bool = True) -> list:
    """Read the image/label (and background) files as training pairs for ``config`` (its ndim
    and spacing; a ``--gray`` rule goes into its normalisation, so the model applies it to
    colour input); on the main process, say what counts in each."""
    from napari_unet.commands.files import read_pairs
    from napari_unet.core.checks import check_training_pairs
    from napari_unet.core.training.data import TrainingPair

    ndim = config.ndim
    slices = getattr(args, "annotated_slices", None)
    if slices and ndim != 3:
        raise CLIError("--annotated-slices: marks planes of volumes; add --ndim 3 (with 3D "
                       "TIFF stacks), or give 2D --annotated masks")
    if slices and args.annotated:
        raise CLIError("--annotated-slices, --annotated: give one of them (the planes for all "
                       "volumes, or one mask of annotated voxels per volume)")
    rows = read_pairs(args.images, args.labels, args.annotated, gray=args.gray,
                      channel_axis=args.channel_axis, background=args.background, ndim=ndim)
    if args.gray:  # the model turns colour input gray the way its training images were
        config.normalization = {**config.normalization, "colour": args.gray}
    if slices:
        for r in rows:
            r["annotated"] = parse_slices(slices, r["labels"].shape)
    pairs = [TrainingPair(r["image"], r["labels"], r["annotated"], r["channel_axis"],
                          background=r["background"], sparse=args.sparse, ndim=ndim,
                          spacing=config.spacing) for r in rows]
    check_training_pairs(pairs, names=[str(r["path"]) for r in rows])  # names the files
    if main and args.sparse:
        from napari_unet.core.targets.sparse import describe_annotation

        for r in rows:
            info = describe_annotation(r["labels"], annotated=r["annotated"],
                                       background=r["background"], sparse=True)
            print(f"{Path(r['path']).name}: {info['text']}", file=sys.stderr)
    elif main and slices:
        for r in rows:
            n, total = int(r["annotated"].sum()), r["annotated"].size
            print(f"{Path(r['path']).name}: labels complete on the planes {' '.join(slices)}; "
                  f"{n} of {total} voxels count, the rest is ignored", file=sys.stderr)
    return pairs


def check_run_folder(args: argparse.Namespace) -> None:
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
