"""Export a napari-unet model to bioimage.io, TorchScript or ONNX.

Every export outputs soft-max probabilities (batch, class, y, x) for a normalised input
(batch, channel, y, x). The bioimage.io package (a folder, or a .zip) holds the state dict with the
architecture source, TorchScript and ONNX weights, test tensors, a cover image, the citation of the
paper and the percentile normalisation as pre-processing.

Examples:
  napari-unet export --model cells.safetensors --format bioimageio --out cells.zip
  napari-unet export --model cells.safetensors --format onnx --out cells.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

_SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--model", type=Path, required=True, help="model file (.safetensors) written by napari-unet"
    )
    parser.add_argument(
        "--format",
        choices=("bioimageio", "torchscript", "onnx"),
        default="bioimageio",
        help="export format (default: bioimageio)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="bioimageio: a .zip file or a new folder; torchscript: a .pt file; onnx: a .onnx file",
    )
    parser.add_argument("--name", help="bioimageio: model name (letters, digits, spaces, _+-())")
    parser.add_argument("--description", help="bioimageio: one-paragraph description")
    parser.add_argument(
        "--author", action="append", dest="authors", metavar="NAME", help="bioimageio: author "
        "(repeat for several)"
    )
    parser.add_argument(
        "--test-image",
        type=Path,
        help="bioimageio: image (TIFF/PNG) for the test tensors and cover (default: synthetic cells)",
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite an existing --out file"
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from napari_unet.cli import CLIError
    from napari_unet.core.io.export import export_model
    from napari_unet.core.io.model_file import load_model

    log = logging.getLogger("napari_unet.export")
    out: Path = args.out
    if args.format in _SUFFIX and out.suffix.lower() != _SUFFIX[args.format]:
        raise CLIError(
            f"--out: expected a file ending in {_SUFFIX[args.format]} for --format {args.format}, "
            f"got {str(out)!r}"
        )
    if args.format in _SUFFIX or out.suffix.lower() == ".zip":
        if out.is_dir():
            raise CLIError(f"--out: {str(out)!r} is a folder; expected a file name")
        if out.exists() and not args.force:
            raise CLIError(f"--out: {str(out)!r} exists; add --force to overwrite it")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CLIError(
            f"--out: {str(out)!r} exists and is not an empty folder; name a new folder or a .zip"
        )
    if args.format != "bioimageio":
        given = [o for o in ("name", "description", "authors", "test_image") if getattr(args, o)]
        if given:
            opts = ", ".join("--" + o.replace("_", "-").rstrip("s") for o in given)
            raise CLIError(f"{opts}: only used with --format bioimageio")
    model, metadata = load_model(args.model)
    options = {}
    if args.format == "bioimageio":
        options = {"name": args.name, "description": args.description, "authors": args.authors}
        if args.test_image is not None:
            from napari_unet.commands.files import read_image

            image, axis = read_image(args.test_image)
            if axis is not None:
                import numpy as np

                image = np.moveaxis(image, axis, 0)
            options["image"] = image
    if args.format == "bioimageio":
        log.info("exporting %s to a bioimage.io package (validating it)...", args.model)
    path = export_model(model, out, format=args.format, metadata=metadata, **options)
    print(f"wrote {args.format} export of {args.model} to {path}")
    return 0
