"""Segment images, folders of images or zarr arrays with a trained U-Net.

Files (TIFF/PNG; a (Z, Y, X) TIFF is predicted as a volume by a 3D model, plane by plane by a
2D model — the command prints which; see ``--ndim``) give ``OUTPUT/<name>_labels.tif``
(int32 instance labels) and, with ``--probabilities``, ``OUTPUT/<name>_probabilities.tif``
(float32, classes first). A zarr array input gives a zarr group at OUTPUT with ``labels`` and
optionally ``probabilities``, written block by block (memory independent of the image size;
the watershed and the confident cores of e.g. the shipped model label each block with a
``--halo`` of context around it);
``--scheduler tcp://HOST:8786`` runs the blocks on a dask distributed cluster. A TIFF file with
``--output NAME.zarr`` is predicted block by block the same way, read tile by tile.

Before a file is read, the memory of segmenting it at once is estimated from its header; an
image that would not fit is refused with that route as the fix
(:mod:`napari_unet.commands.big_images`). Progress is shown per tile batch: a bar on a
terminal, a line every 10 s otherwise.

``--measure`` adds ``OUTPUT/<name>_cells.csv`` beside each label image (one row per cell: label,
size, centroid, bounding box, shape, intensity, border flag and the model's confidence; a stack
of planes has a ``plane`` column; units in the header, physical with ``--pixel-size``) and
``OUTPUT/summary.csv`` (cells and mean cell size per image): the same table as the Predict
widget's. ``--confidence`` adds ``OUTPUT/<name>_confidence.csv``: the predicted cells and the
likely misses (blobs of probability without a cell), least certain first, with the model's
confidence and the reason (the Predict widget's *Check these next* list).

Output names are unique per input file (``cell.1.tif`` → ``cell.1_labels.tif``; ``img.png`` and
``img.tif`` → ``img_png_labels.tif``, ``img_tif_labels.tif``); existing outputs are never
replaced without ``--force``, and ``--output`` may not be the input folder. A 3D TIFF of planes,
(N, H, W), is a stack even for N = 3 or 4; ``--channel-axis`` says which axis holds channels.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from napari_unet.cli import CLIError
from napari_unet.commands.big_images import is_tiff, open_tiff_lazily
from napari_unet.commands.options import (
    add_postprocess_arguments,
    add_scales_argument,
    add_tta_argument,
    model_file,
    postprocess_settings,
    scales_choice,
    tta_choice,
)
from napari_unet.commands.volume import add_volume_arguments, describe, resolve_mode

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path,
                        help="model file (.safetensors) or a shipped model's name (e.g. nuclei)")
    parser.add_argument(
        "--input", required=True, type=Path, help="an image file, a folder of images or a zarr array"
    )
    parser.add_argument(
        "--output", required=True, type=Path, help="output folder (files) or zarr path (zarr input)"
    )
    add_tta_argument(parser)
    add_scales_argument(parser)
    parser.add_argument("--probabilities", action="store_true", help="also write probabilities")
    parser.add_argument("--scheduler", help="dask distributed scheduler address (zarr input)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--tile", help="network input tile, N, HxW or DxHxW for a 3D model "
                        "(default: from memory)")
    parser.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass")
    parser.add_argument("--block", type=int, default=None,
                        help="zarr output block side (default 1024; 128 for a 3D model)")
    parser.add_argument("--halo", type=int, default=None,
                        help="zarr output with --watershed or --seeds: pixels of context "
                             "labelled around each block, wider than the largest cell "
                             "(default 64; 32 for a 3D model)")
    parser.add_argument(
        "--channel-axis", type=int,
        help="axis of the channels in the input (default: colour only for (H, W, 3|4) RGB(A) "
             "files; planes first are a stack)")
    parser.add_argument("--force", action="store_true", help="replace existing output files")
    parser.add_argument(
        "--measure", action="store_true",
        help="also write OUTPUT/<name>_cells.csv (one row per cell: size, centroid, bounding "
             "box, shape, intensity, border flag, the model's confidence; units in the "
             "header) and OUTPUT/summary.csv (cells and mean size per image)")
    parser.add_argument(
        "--confidence", action="store_true",
        help="also write OUTPUT/<name>_confidence.csv: every predicted cell and likely miss "
             "(probability without a cell), least certain first, with the model's confidence "
             "(0-1) and the reason; the cells to check first")
    parser.add_argument(
        "--pixel-size", type=float, nargs="+", metavar="SIZE",
        help="with --measure: the pixel size, one value or one per axis (Y X, or Z Y X for "
             "volumes), so that areas and lengths are physical (default: pixels)")
    parser.add_argument("--unit", default="µm",
                        help="with --pixel-size: its unit, written in the header (default µm)")
    parser.add_argument("--stitch", action="store_true",
                        help="a 2D model on a (Z, Y, X) stack: link the planes' labels into 3D "
                             "objects (IoU >= 0.25 with the plane above) instead of one object "
                             "per cell and plane")
    add_volume_arguments(parser)
    add_postprocess_arguments(parser)


def _tile(text: str | None, ndim: int = 2) -> tuple[int, ...] | None:
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, ndim) or min(values, default=0) < 1:
        form = "N or HxW (e.g. 572 or 572x764)" if ndim == 2 else "N or DxHxW (e.g. 44x92x92)"
        raise CLIError(f"--tile: expected {form}, got {text!r}")
    return tuple(values) if len(values) == ndim else (values[0],) * ndim


def _is_zarr(path: Path) -> bool:
    return path.suffix == ".zarr" or (path / ".zarray").exists() or (path / "zarr.json").exists()


def _blockwise(args) -> bool:
    """A zarr array, or a TIFF file written to a zarr store: predicted block by block."""
    return _is_zarr(args.input) or (args.output.suffix == ".zarr" and args.input.is_file()
                                    and is_tiff(args.input))


#: seconds between two progress lines when stderr is not a terminal
PROGRESS_EVERY_S = 10.0


class _Progress:
    """Progress per tile batch: a tqdm bar on a terminal; elsewhere (a log file, a pipe) one
    line every :data:`PROGRESS_EVERY_S` seconds, so that a long prediction is never silent."""

    def __init__(self, desc: str) -> None:
        import time

        from tqdm import tqdm

        self.desc, self.clock = desc, time.monotonic
        self.last = self.clock()
        self.bar = tqdm(desc=desc, unit="batch", file=sys.stderr, leave=False) \
            if sys.stderr.isatty() else None

    def update(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.total, self.bar.n = total, done
            self.bar.refresh()
        elif self.clock() - self.last >= PROGRESS_EVERY_S and total:
            self.last = self.clock()
            logger.info("%s: %d of %d tile batches (%.0f%%)", self.desc, done, total,
                        100 * done / total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run_files(args, model, meta, tile, spacing=None) -> int:
    from napari_unet.commands.pairing import expand_paths
    from napari_unet.commands.predict_files import (
        FileDone,
        iter_predict_files,
        measure_spacing,
        plan_outputs,
    )
    from napari_unet.core.predict.images import normalizer

    paths = expand_paths(args.input, what="--input")
    targets = plan_outputs(paths, args.output, probabilities=args.probabilities,
                           measure=args.measure, force=args.force,
                           confidence=args.confidence)
    if args.pixel_size is not None:
        measure_spacing(args.pixel_size, model.ndim)  # a bad size fails before any work
    settings, tta = postprocess_settings(args, meta), tta_choice(args, meta)
    normalizer(meta)  # an unknown normalisation fails before any work
    print(f"predicting {len(paths)} file(s) {describe(model.ndim, spacing)}")
    events = iter_predict_files(
        model, meta, paths, targets, settings=settings, tta=tta, spacing=spacing,
        tile_shape=tile, batch_size=args.batch_size, channel_axis=args.channel_axis,
        stitch=args.stitch, pixel_size=args.pixel_size, unit=args.unit, scales=args.scales)
    bar = None
    while True:
        try:
            ev = next(events)
        except StopIteration as stop:
            summary = stop.value
            break
        if isinstance(ev, FileDone):
            bar.close()
            bar = None
            logger.info("%s: %d cells -> %s", ev.path.name, ev.cells, args.output)
            continue
        bar = bar or _Progress(ev.path.name)
        bar.update(ev.event.plane * ev.event.total + ev.event.done,
                   ev.event.total * ev.event.planes)
    if summary is not None:
        from napari_unet.core.measure import with_units

        print(with_units(summary).to_string(index=False))
    return 0


def _run_zarr(args, meta, tile, spacing=None) -> int:
    import zarr

    from napari_unet.core.predict.blockwise import iter_predict_to_zarr

    source = str(args.input)
    if not _is_zarr(args.input):  # a TIFF file into a zarr store: read tile by tile
        if args.scheduler:
            raise CLIError("--scheduler: the workers read a zarr array; convert the TIFF to "
                           "zarr first, or drop --scheduler to predict it in this process")
        source = open_tiff_lazily(args.input)
    try:
        if isinstance(source, str):
            zarr.open_array(source, mode="r")
    except Exception as err:  # zarr raises various types for a missing/odd store
        raise CLIError(
            f"--input: cannot open {str(args.input)!r} as a zarr array ({type(err).__name__}: "
            f"{err}); give the path of an array, not of a group"
        ) from None
    if args.output.exists() and not args.force:
        raise CLIError(
            f"--output: {str(args.output)!r} exists; earlier results are not replaced: choose "
            "another --output, or add --force"
        )
    settings, tta = postprocess_settings(args, meta), tta_choice(args, meta)
    bar = _Progress(args.input.name)
    for ev in iter_predict_to_zarr(
        args.model, source, args.output, metadata=meta,
        channel_axis=args.channel_axis, block=args.block, tile_shape=tile,
        batch_size=args.batch_size, device=args.device, tta=tta,
        probabilities=args.probabilities, settings=settings, scheduler=args.scheduler,
        spacing=spacing, halo=args.halo,
    ):  # fmt: skip
        bar.update(ev.done, ev.total)
    bar.close()
    logger.info("%s -> %s", args.input, args.output)
    return 0


def _check_tile_memory(model, tile, batch_size: int, device) -> None:
    from napari_unet.core.model.memory import check_memory

    try:
        check_memory(in_channels=model.in_channels, num_classes=model.num_classes,
                     depth=model.depth, base_channels=model.base_channels, tile=max(tile),
                     batch_size=batch_size, padding=model.padding, device=device,
                     training=False, ndim=model.ndim)
    except ValueError as err:
        raise CLIError("--tile, --batch-size: " + str(err).removeprefix("memory: ")) from None


def run(args: argparse.Namespace) -> int:
    from napari_unet.core.device import pick_device
    from napari_unet.core.io.model_file import load_model

    if args.block is not None and args.block < 1:
        raise CLIError(f"--block: expected a positive block side, got {args.block}")
    if args.halo is not None and args.halo < 1:
        raise CLIError(f"--halo: expected a positive number of pixels, got {args.halo}; give "
                       "one wider than the largest cell, e.g. --halo 64")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    args.model = model_file(args.model, "--model")
    if not args.model.is_file():
        raise CLIError(f"--model: {str(args.model)!r} is not a file")
    if not args.input.exists():
        raise CLIError(f"--input: {str(args.input)!r} does not exist")
    device = pick_device(args.device)
    model, meta = load_model(args.model, device=device)
    ndim, spacing = resolve_mode(args, model, meta)
    tile = _tile(args.tile, ndim)
    if tile is not None:
        try:
            model.output_shape(tile)  # a one-line error naming the nearest valid sizes
        except ValueError as err:
            raise CLIError(f"--tile: {err}") from None
        _check_tile_memory(model, tile, args.batch_size, device)
    postprocess_settings(args, meta)  # a bad option fails before any work
    if args.stitch and model.ndim == 3:
        raise CLIError("--stitch: a 3D model labels a volume in 3D already; drop --stitch "
                       "(it links the planes a 2D model labels one by one)")
    if args.stitch and _blockwise(args):
        raise CLIError("--stitch: not for block-wise prediction into zarr (blocks are "
                       "labelled in 2D or 3D by the model); predict a TIFF stack into a "
                       "folder, or use a 3D model")
    if args.pixel_size is not None and not args.measure:
        raise CLIError("--pixel-size: sizes the --measure tables; add --measure or drop it")
    if args.measure and _blockwise(args):
        raise CLIError("--measure: for results written as files (a zarr store is written "
                       "block by block); predict TIFF files into a folder, or drop --measure")
    if args.confidence and _blockwise(args):
        raise CLIError("--confidence: for results written as files (a zarr store is written "
                       "block by block); predict TIFF files into a folder, or drop "
                       "--confidence")
    args.scales = scales_choice(args)  # a bad factor fails before any work
    if args.scales not in (None, (1.0,)) and _blockwise(args):
        raise CLIError("--scales: block-wise prediction into zarr predicts at the image's own "
                       "size; drop --scales (or give --scales 1), or predict the image into a "
                       "folder to average several scales")
    if _blockwise(args):
        print(f"predicting {args.input} block by block {describe(ndim, spacing)}")
        return _run_zarr(args, meta, tile, spacing)
    if args.scheduler:
        raise CLIError("--scheduler: only for zarr input (files are predicted in this process)")
    return _run_files(args, model, meta, tile, spacing)
