"""Predict image files into a folder: the one path of ``napari-unet predict`` on files and of
the Predict widget's *Predict a folder…*.

For each input ``<name>.tif`` (or .png) it writes ``<name>_labels.tif`` (int32 instance
labels), with ``probabilities`` ``<name>_probabilities.tif`` (float32, classes first), and with
``measure`` ``<name>_cells.csv`` (one row per cell, :func:`napari_unet.core.measure.
measure_cells`, units in the header) and, once all are done, ``summary.csv`` (cells and mean
cell size per image); with ``confidence`` ``<name>_confidence.csv`` (the cells and the likely
misses, least certain first: :func:`napari_unet.core.review.review_table`, the Predict
widget's *Check these next* list). :func:`plan_outputs` names every output and refuses, before any work,
to replace what exists (unless ``force``), to write into the input folder or over an input.
:func:`iter_predict_files` is a generator: progress per tile batch, one :class:`FileDone` per
file; a consumer cancels by no longer iterating (the files finished so far stay).
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_unet.cli import CLIError

__all__ = ["CELLS", "CONFIDENCE", "LABELS", "PROBABILITIES", "SUMMARY", "FileDone", "FileProgress",
           "existing_outputs", "iter_predict_files", "measure_file", "measure_spacing",
           "plan_outputs", "read_input"]

LABELS, PROBABILITIES, CELLS = "_labels.tif", "_probabilities.tif", "_cells.csv"
logger = logging.getLogger(__name__)

#: the per-cell confidence, least certain first (``confidence``)
CONFIDENCE = "_confidence.csv"
#: the folder's summary, written with ``measure``
SUMMARY = "summary.csv"


@dataclass
class FileProgress:
    """A tile batch of file ``index`` (of ``count``): ``event`` is the core's PredictProgress."""

    index: int
    count: int
    path: Path
    event: object


@dataclass
class FileDone:
    """File ``index`` (of ``count``) is written: its outputs, its cell count, its cells' table
    (None without ``measure``)."""

    index: int
    count: int
    path: Path
    outputs: dict
    cells: int
    table: object = field(default=None, repr=False)


def plan_outputs(paths: Sequence[Path], output: Path, *, probabilities: bool = False,
                 measure: bool = False, force: bool = False, confidence: bool = False,
                 what: str = "--output") -> list[dict]:
    """The output files of every input (suffix → path; the folder's ``summary.csv`` under
    :data:`SUMMARY` in the first), checked before any work: ``output`` is a folder that is not
    the inputs' folder, no output is an input, and none exists unless ``force``.
    ``what`` names the output folder in the errors (a CLIError)."""
    from napari_unet.commands.pairing import output_paths

    paths = [Path(p) for p in paths]
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise CLIError(f"{what}: {str(output)!r} exists and is not a folder")
    inputs = {p.resolve() for p in paths}
    for source in {p.parent.resolve() for p in paths}:
        if output.resolve() == source:
            raise CLIError(
                f"{what}: {str(output)!r} is the input folder; the results would be read as "
                "images by the next run: choose another folder, e.g. "
                f"{str(source.with_name(source.name + '_labels'))!r}")
    suffixes = ([LABELS] + [PROBABILITIES] * probabilities + [CELLS] * measure
                + [CONFIDENCE] * confidence)
    targets = output_paths(paths, output, suffixes)
    if measure and targets:
        targets[0][SUMMARY] = output / SUMMARY
    for target in targets:
        for out in target.values():
            if out.resolve() in inputs:
                raise CLIError(f"{what}: {str(out)!r} is one of the input files")
    existing = existing_outputs(targets)
    if existing and not force:
        fix = (f"choose another {what} folder, or add --force" if what.startswith("--") else
               "choose another folder, or allow replacing them")
        raise CLIError(f"{what}: {str(existing[0])!r} exists ({len(existing)} of the outputs "
                       f"do); earlier results are not replaced: {fix}")
    return targets


def existing_outputs(targets: Sequence[dict]) -> list[Path]:
    """The planned outputs that exist already."""
    return [out for target in targets for out in target.values() if out.exists()]


def read_input(path: Path, model, channel_axis: int | None = None):
    """(array, channel_axis, is_stack) of one input file as the model reads it: a 3D model a
    (Z, Y, X) volume; a 2D model an image ((H, W) or with colour channels), or a (Z, Y, X)
    TIFF as a stack of planes. A CLIError naming the file when the model cannot read it."""
    from napari_unet.commands.files import read_image
    from napari_unet.commands.volume import read_volume

    if model.ndim == 3:
        image, axis = read_volume(path, model, channel_axis)
        return image, axis, True
    try:
        image, axis = read_image(path, channel_axis=channel_axis)
    except CLIError as err:
        if path.suffix.lower() not in (".tif", ".tiff") or "expected a 2D image" not in str(err):
            raise
        import tifffile

        stack = np.squeeze(tifffile.imread(path))  # read_image read it: a readable TIFF
        if stack.ndim == 3 and model.in_channels == 1 and channel_axis is None:
            return stack, None, True
        raise
    channels = 1 if axis is None else image.shape[axis]
    if channels == 1 and model.in_channels == 3:  # a gray image for an RGB model: R = G = B
        image, axis, channels = np.repeat(image[..., None], 3, axis=-1), -1, 3
    if channels in (3, 4) and model.in_channels == 1:  # gray by the model's stored rule
        return image, axis, False
    if channels != model.in_channels:
        raise CLIError(
            f"{path}: the image has {channels} channel(s) but the model expects "
            f"{model.in_channels}; convert the image or use a model trained on {channels} "
            "channel(s)")
    return image, axis, False


def measure_spacing(pixel_size: Sequence[float] | None, ndim: int, *, planes: bool = False,
                    what: str = "--pixel-size") -> tuple[float, ...] | None:
    """The pixel size per axis of labels with ``ndim`` axes (a stack of planes: 1 along the
    planes) from one value or one per spatial axis; None stays None (pixels).

    >>> measure_spacing([0.5], 3, planes=True)
    (1.0, 0.5, 0.5)
    """
    if pixel_size is None:
        return None
    size = [float(s) for s in pixel_size]
    n = 2 if planes else ndim
    if len(size) == 3 and planes:
        size = size[1:]
    if len(size) not in (1, n) or min(size) <= 0:
        raise CLIError(f"{what}: expected 1 or {n} positive sizes (one per spatial axis), got "
                       f"{list(pixel_size)}")
    size = size * n if len(size) == 1 else size
    return (1.0, *size) if planes else tuple(size)


def measure_file(labels, prob, image, channel_axis, *, planes: bool, flip_std=None,
                 pixel_size=None, unit: str = "µm"):
    """The cells' table of one predicted file (:func:`napari_unet.core.measure.measure_cells`
    with the confidence maps of ``prob``); physical with ``pixel_size`` (in ``unit``)."""
    from napari_unet.core.measure import confidence_maps, measure_cells

    return measure_cells(
        labels, image, maps=confidence_maps(prob, flip_std=flip_std, stacked=planes),
        spacing=measure_spacing(pixel_size, labels.ndim, planes=planes),
        unit=unit if pixel_size is not None else "px", channel_axis=channel_axis, planes=planes)


def iter_predict_files(
    model, metadata: dict | None, paths: Sequence[Path], targets: Sequence[dict], *,
    settings=None, tta: bool | None = None, spacing=None, tile_shape=None, batch_size: int = 1,
    channel_axis: int | None = None, stitch: bool = False, device=None,
    pixel_size: Sequence[float] | None = None, unit: str = "µm",
    scales: Sequence[float] | None = None,
) -> Generator[FileProgress | FileDone, None, object]:
    """Segment every file of ``paths`` into its ``targets`` (from :func:`plan_outputs`; what
    they hold says whether probabilities and tables are written).

    ``settings``, ``tta``, ``spacing``, ``tile_shape``, ``batch_size``, ``device``,
    ``scales`` (None: the model's stored scales for each image's kind): as
    :func:`napari_unet.core.predict.iter_segment`; ``stitch`` links a 2D model's planes of a
    stack into 3D objects. ``pixel_size`` (one value, or one per axis) and ``unit`` make the
    tables physical (default: pixels). Yields :class:`FileProgress` and :class:`FileDone`;
    returns the summary table (``measure``) or None. Before any file is read, each one's
    header says whether segmenting it at once fits in memory: a CLIError names the one that
    does not, with the block-wise route
    (:func:`napari_unet.commands.big_images.check_whole_image`).
    """
    from napari_unet.commands.big_images import LARGE, check_whole_image
    from napari_unet.commands.files import write_image
    from napari_unet.core.measure import summarize, with_units, write_csv
    from napari_unet.core.metrics import count_labels
    from napari_unet.core.predict.segment import iter_segment
    from napari_unet.core.review import review_table

    # an image too large to segment at once: refused before any work
    watershed = bool(getattr(settings, "watershed", False))
    pixels = [check_whole_image(path, model, tile=tile_shape, batch_size=batch_size,
                                device=device, watershed=watershed, scales=scales,
                                metadata=metadata)
              for path in paths]
    tables, names = [], []
    for index, (path, target) in enumerate(zip(paths, targets, strict=True)):
        if pixels[index] > LARGE:  # seconds before the first tile: say what happens
            logger.info("%s: reading and normalising %d pixels", path.name, pixels[index])
        image, axis, is_stack = read_input(path, model, channel_axis)
        volume = model.ndim == 3
        stack = image if is_stack else image[None]
        caxis = axis if is_stack or axis is None else (axis % image.ndim) + 1
        ev = None
        for ev in iter_segment(
            model, stack, metadata=metadata, settings=settings, stack=not volume,
            channel_axis=caxis, spacing=spacing, tta=tta, tile_shape=tile_shape,
            batch_size=batch_size, device=device, stitch=stitch and is_stack and not volume,
            scales=scales,
        ):  # fmt: skip
            yield FileProgress(index, len(paths), path, ev)
        prob, labels, flip_std = ev.result, ev.labels, ev.flip_std
        if not is_stack:  # one plane of a stack of one
            prob, labels = prob[0], labels[0]
            flip_std = None if flip_std is None else flip_std[0]
        write_image(target[LABELS], labels)
        if PROBABILITIES in target:  # classes first: (K, [Z,] Y, X); a 2D stack (Z, K, Y, X)
            write_image(target[PROBABILITIES], prob)
        table = None
        planes = is_stack and not volume
        if CELLS in target or CONFIDENCE in target:
            table = measure_file(labels, prob, image, axis, planes=planes,
                                 flip_std=flip_std, pixel_size=pixel_size, unit=unit)
        if CELLS in target:
            write_csv(with_units(table), target[CELLS], overwrite=True)
            tables.append(table)
            names.append(path.name)
        if CONFIDENCE in target:
            background = prob[:, 0] if planes else prob[0]
            write_csv(review_table(table, labels, 1.0 - background, planes=planes),
                      target[CONFIDENCE], overwrite=True)
        yield FileDone(index, len(paths), path, dict(target), count_labels(labels), table)
    if not tables or SUMMARY not in targets[0]:
        return None
    summary = summarize(tables, names)
    write_csv(with_units(summary), targets[0][SUMMARY], overwrite=True)
    return summary
