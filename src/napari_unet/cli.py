"""The ``napari-unet`` command line: demo, train, predict, evaluate, export.

Each sub-command lives in :mod:`napari_unet.commands` as a module with ``add_arguments(parser)``
and ``run(args) -> int``; heavy imports (torch) happen inside ``run`` so ``--help`` is instant.
User errors raise :class:`CLIError` (or ValueError / OSError from core) and are printed as one
line ``napari-unet <command>: error: ...`` (:func:`napari_unet.errors.format_error`, which
also puts the option the user typed in place of an internal name) with exit status 2; anything
else is a bug: one line ``... internal error: ...`` with exit status 1 (``-v`` shows the
traceback). Never a traceback by default.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from napari_unet import installation
from napari_unet.errors import format_error, is_user_error, option_names

__all__ = ["CLIError", "build_parser", "main"]

#: sub-command name → (module under napari_unet.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "demo",
        "train briefly on bundled sample data, predict, print metrics, save an overlay",
    ),
    "train": (
        "train",
        "train a U-Net on image/label files (TIFF/PNG) and save a .safetensors model",
    ),
    "predict": ("predict", "segment images, folders or zarr arrays with a trained model"),
    "evaluate": ("evaluate", "compare a model's predictions with ground-truth labels"),
    "export": ("export", "export a model to bioimage.io, TorchScript or ONNX"),
}


class CLIError(Exception):
    """A user error on the command line: printed as one line, exit status 2."""


def _available_commands() -> dict[str, object]:
    mods = {}
    for name, (module, _help) in COMMANDS.items():
        try:
            mods[name] = importlib.import_module(f"napari_unet.commands.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"napari_unet.commands.{module}":
                raise
    return mods


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-parser per available command."""
    from napari_unet import __version__

    parser = argparse.ArgumentParser(
        prog="napari-unet",
        description=(
            "Train and apply the U-Net of Ronneberger, Fischer & Brox (2015) on a few annotated "
            "cells. Run 'napari-unet COMMAND --help' for the options of a command."
        ),
    )
    parser.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _available_commands().items():
        help_text = COMMANDS[name][1]
        p = sub.add_parser(name, help=help_text, description=module.__doc__ or help_text)
        module.add_arguments(p)
        names = option_names(p)
        if "images" in names and "labels" in names:  # core names the training data "pairs"
            names.setdefault("pairs", "--images, --labels")
        p.set_defaults(_run=module.run, _names=names)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-unet`` console script; returns the exit status.

    First of all it checks that ``napari_unet`` is this project's (another project ships an
    import package of that name, :mod:`napari_unet.installation`): if not, one line says what
    is wrong and how to repair it, with exit status 2.
    """
    problem = installation.problem()
    if problem is not None:
        print(f"napari-unet: error: {problem}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"napari-unet {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.verbose:
            raise
        user = is_user_error(err)
        logging.getLogger(__name__).debug("%s", args.command, exc_info=True)
        print(f"napari-unet {args.command}: {'error' if user else 'internal error'}: "
              f"{format_error(err, names=args._names)}", file=sys.stderr)
        return 2 if user else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
