"""Options shared by the sub-commands: the post-processing options, built from
:class:`~napari_unet.core.predict.PostprocessSettings` (every field becomes ``--name``,
booleans ``--name`` / ``--no-name``, with the field's help; the default is None, i.e. "what the
model file stores", ``metadata["postprocess"]``), ``--tta`` and model-file arguments.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from napari_unet.core.predict.postprocess import PostprocessSettings


def add_postprocess_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per post-processing setting (default: the model's stored value)."""
    group = parser.add_argument_group("post-processing (default: as stored with the model)")
    defaults = PostprocessSettings()
    for f in fields(PostprocessSettings):
        flag = "--" + f.name.replace("_", "-")
        text = f"{f.metadata['help']} (built-in default {getattr(defaults, f.name)})"
        if f.type in (bool, "bool"):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=text)
        else:
            kind = float if f.type in (float, "float") else int
            group.add_argument(flag, type=kind, default=None, help=text)


def postprocess_settings(args: argparse.Namespace, metadata: dict | None) -> PostprocessSettings:
    """The model's stored settings with the options given on the command line on top."""
    from napari_unet.cli import CLIError

    given = {f.name: getattr(args, f.name, None) for f in fields(PostprocessSettings)}
    try:
        return PostprocessSettings.from_metadata(metadata, **given)
    except ValueError as err:
        raise CLIError(f"--{str(err).replace('_', '-')}") from None


def add_tta_argument(parser: argparse.ArgumentParser) -> None:
    """``--tta`` / ``--no-tta`` (default: what the model stores, see :func:`tta_choice`)."""
    parser.add_argument(
        "--tta", action=argparse.BooleanOptionalAction, default=None,
        help="average the 8 flips/rotations (8 predictions per tile; default: as stored with "
             "the model: on for 2D models trained by napari-unet, whose post-processing was "
             "chosen with them)")


def tta_choice(args: argparse.Namespace, metadata: dict | None) -> bool:
    """``--tta`` / ``--no-tta`` as given, else the model's stored choice (said on stderr when
    it is on, with the option that switches it off)."""
    import sys

    from napari_unet.core.predict.postprocess import stored_tta

    if getattr(args, "tta", None) is not None:
        return bool(args.tta)
    if stored_tta(metadata):
        print("test-time augmentation on, as stored with the model (its post-processing was "
              "chosen with it); --no-tta predicts 8x faster", file=sys.stderr)
        return True
    return False


def model_file(value, option: str) -> Path:
    """The model file an option names: a path, or a shipped model's name
    (:func:`napari_unet.models.resolve_model`); a one-line error naming ``option`` otherwise.

    >>> model_file("cells.safetensors", "--model").name
    'cells.safetensors'
    """
    from napari_unet.cli import CLIError
    from napari_unet.models import resolve_model

    try:
        return resolve_model(value)
    except (KeyError, FileNotFoundError) as err:
        raise CLIError(f"{option}: {err.args[0]}") from None
