"""Options built from the settings' one declaration, and options shared by the sub-commands.

- the training options of ``napari-unet train``, from
  :class:`~napari_unet.core.training.TrainConfig`'s fields with a ``flag``
  (:func:`add_config_arguments`); an option not given is left to the planner
  (:func:`napari_unet.core.training.plan`), which :func:`config_choices` feeds;
- the post-processing options, from :class:`~napari_unet.core.predict.PostprocessSettings`
  (every field becomes ``--name``, booleans ``--name`` / ``--no-name``, with the field's help;
  the default is None, i.e. "what the model file stores", ``metadata["postprocess"]``);
- ``--tta``, ``--scales`` and model-file arguments.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from napari_unet.core.predict.postprocess import PostprocessSettings


def _option_type(field):
    kind = str(field.type)
    if "Path" in kind:
        return Path
    if kind.startswith("int") or kind.startswith("tuple[int"):
        return int
    if kind.startswith("float") or kind.startswith("tuple[float"):
        return float
    return str


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per training setting with a ``flag`` (default None: the plan decides)."""
    from napari_unet.core.training.config import setting_fields

    group = parser.add_argument_group("training settings (default: as planned, see each)")
    for f in setting_fields(where="cli"):
        meta = f.metadata
        default = meta.get("default_help", repr(f.default))
        kwargs = {"type": _option_type(f), "default": None, "dest": f.name,
                  "help": f"{meta['help']} (default: {default})"}
        for key in ("choices", "nargs", "metavar"):
            if key in meta:
                kwargs[key] = meta[key]
        group.add_argument(meta["flag"], **kwargs)
    group.add_argument("--no-augment", action="store_true", help="switch augmentation off")


def config_choices(args: argparse.Namespace) -> dict:
    """The training settings given on the command line (the others are left to the plan):
    ``--tile`` one side or one per axis, ``--spacing`` one size per axis, ``--no-augment``."""
    from napari_unet.cli import CLIError
    from napari_unet.core.training.config import setting_fields

    ndim = getattr(args, "ndim", None) or 2
    given = {f.name: getattr(args, f.name, None) for f in setting_fields(where="cli")}
    given = {k: v for k, v in given.items() if v is not None}
    if "tile" in given:
        tile = list(given["tile"]) if isinstance(given["tile"], list | tuple) else [given["tile"]]
        if len(tile) not in (1, ndim):
            raise CLIError(f"--tile: expected one side or {ndim} (one per axis with --ndim "
                           f"{ndim}), got {len(tile)} values {tile}")
        given["tile"] = tile[0] if len(tile) == 1 else tuple(tile)
    if "spacing" in given:
        spacing = list(given["spacing"])
        if len(spacing) != ndim or any(not (v > 0) for v in spacing):
            example = "--spacing 4 1 1 (Z Y X)" if ndim == 3 else "--spacing 1 1 (Y X)"
            more = "" if ndim == 3 or len(spacing) != 3 else "; for volumes add --ndim 3"
            raise CLIError(f"--spacing: expected {ndim} positive pixel sizes (one per axis "
                           f"with --ndim {ndim}), got {spacing}; e.g. {example}{more}")
        given["spacing"] = tuple(spacing)
    if ndim == 2 and given.get("pretrain_2d"):
        raise CLIError("--pretrain-2d: pre-training in 2D starts a 3D U-Net; give --ndim 3 "
                       "(2D training needs no pre-training)")
    if getattr(args, "no_augment", False):
        from napari_unet.core.augment.config import AugmentConfig

        given["augment"] = AugmentConfig.none()
    given["ndim"] = ndim
    return given


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
        help="test-time augmentation: average the image as it is and turned by 180° (2 "
             "predictions per tile; default: as stored with the model: on for 2D models "
             "trained by napari-unet, whose post-processing was chosen with it)")


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


def add_scales_argument(parser: argparse.ArgumentParser) -> None:
    """``--scales S [S ...]`` (default: what the model stores, see :func:`scales_choice`)."""
    parser.add_argument(
        "--scales", type=float, nargs="+", metavar="S", default=None,
        help="predict each image resized by each factor and average the probabilities at "
             "its own size (e.g. --scales 1 0.7 1.4: 3.45x the pixels; --scales 1: its own "
             "size only; default: as stored with the model, for the shipped nuclei model "
             "1 0.7 1.4 on colour images and 1 on gray ones)")


def scales_choice(args: argparse.Namespace) -> tuple[float, ...] | None:
    """``--scales`` as given (checked), or None: the model's stored scales for each image's
    kind (:func:`napari_unet.core.predict.scales.stored_scales`).

    >>> scales_choice(argparse.Namespace(scales=[1, 0.7])), scales_choice(argparse.Namespace())
    ((1.0, 0.7), None)
    """
    from napari_unet.cli import CLIError
    from napari_unet.core.predict.scales import check_scales

    given = getattr(args, "scales", None)
    if given is None:
        return None
    try:
        return check_scales(given, name="--scales")
    except ValueError as err:
        raise CLIError(str(err)) from None


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
