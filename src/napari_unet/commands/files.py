"""Reading image / label files for the command line: folders or file lists of TIFF/PNG.

Every problem (missing file, unreadable file, unpaired image, wrong shape) raises
:class:`napari_unet.cli.CLIError` with one line that names the file, so the user sees no traceback.

Images come back as ``(array, channel_axis)``: ``(H, W)`` with ``channel_axis=None``, or
``(H, W, C)`` with ``channel_axis=-1``. The channel rule, the same for train, predict and
evaluate: a 3D image is colour only when its last axis holds 3 (RGB) or 4 samples, as PNG and
RGB TIFF files store colour, ``(H, W, 3|4)``; the 4th is dropped only when the file marks it as
alpha (PNG RGBA, TIFF extra sample "alpha"); an RGB image whose channels are equal becomes gray.
Planes first, ``(N, H, W)`` — even N = 3 or 4 — are a stack of planes, never colour: predict
segments them plane by plane, train refuses them; with ``--ndim 3`` a TIFF stack is a volume
``(Z, Y, X)`` (:func:`read_image` with ``ndim=3``). ``--channel-axis`` says which axis holds
channels (any number, nothing dropped). NaN/inf pixels and empty images are refused
(:mod:`napari_unet.core.checks`).

Which files go together (pairing by name, output names) is :mod:`napari_unet.commands.pairing`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_unet.cli import CLIError
from napari_unet.commands.pairing import expand_paths, pair_paths

__all__ = [
    "read_image",
    "read_labels",
    "read_pairs",
    "write_image",
]

_MAX_CHANNELS = 4


def _imread(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path))
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except Exception as err:  # any reader failure becomes one line naming the file
        from napari_unet.errors import format_error

        kind = path.suffix.lower().lstrip(".").upper() or "image"
        raise CLIError(
            f"{path}: cannot read it as a {kind} image ({format_error(err)}); give a TIFF or "
            "PNG image, or remove the file from the folder"
        ) from None


def _colour_layout(path: Path, a: np.ndarray) -> tuple[bool, bool]:
    """(channels last are colour samples, the 4th sample is alpha), as the file says."""
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        return False, False
    if path.suffix.lower() == ".png":
        return True, a.shape[-1] == 4
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            axes = tif.series[0].axes
            extra = tuple(int(x) for x in tif.pages[0].extrasamples or ())
    except Exception:  # the array was read already; unknown layout: not colour
        return False, False
    return axes.endswith("S"), a.shape[-1] == 4 and bool(set(extra) & {1, 2})


def _finite(path: Path, a: np.ndarray) -> None:
    from napari_unet.core.checks import check_finite, check_not_empty

    try:
        check_not_empty(a.shape[:2] if a.ndim >= 2 else a.shape, what=str(path))
        check_finite(a, what=str(path))
    except ValueError as err:
        raise CLIError(str(err)) from None


def read_image(
    path: str | os.PathLike, *, gray: str | None = None, channel_axis: int | None = None,
    ndim: int = 2,
) -> tuple[np.ndarray, int | None]:
    """Read a 2D image (gray or with channels), or with ``ndim=3`` a 3D stack ``(Z, Y, X)``
    (or with channels along ``channel_axis``); returns ``(array, channel_axis)``.

    See the module docstring for the channel rule; ``channel_axis`` names the axis of the
    channels in the file's array. ``gray`` turns colour into one channel (float32) by that
    rule of :func:`napari_unet.core.normalize.to_gray` ("auto", "mean" or "stain"); a colour
    stack (``ndim=3``) by the channel mean.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "rgb.png"
    >>> write_image(p, np.zeros((4, 5, 3), np.uint8))
    >>> image, axis = read_image(p)
    >>> image.shape, axis
    ((4, 5), None)
    """
    path = Path(path)
    a = _imread(path)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
        raise CLIError(f"{path}: expected a real-valued image, got dtype {a.dtype}")
    if a.size == 0:
        raise CLIError(f"{path}: got an empty image of shape {a.shape}; expected H, W >= 1; "
                       "remove or replace the empty file")
    if ndim == 3:
        return _read_volume(path, a, gray=gray, channel_axis=channel_axis)
    alpha = False
    if channel_axis is not None:
        if a.ndim < 3 or not -a.ndim <= channel_axis < a.ndim:
            raise CLIError(
                f"--channel-axis: {path} has shape {a.shape}, so axis {channel_axis} is "
                + ("not a channel axis (a 2D image has none); drop --channel-axis"
                   if a.ndim < 3 else f"out of range; expected -{a.ndim}..{a.ndim - 1}")
            )
        a = np.moveaxis(a, channel_axis, -1)
        spatial = [s for s in a.shape[:-1] if s != 1]
        a = a.reshape(*spatial, a.shape[-1])
        colour = a.ndim == 3
    else:
        a = np.squeeze(a) if a.ndim > 2 and 1 in a.shape else a
        colour, alpha = _colour_layout(path, a)
    _finite(path, a)
    if a.ndim == 2:
        return a, None
    if a.ndim == 3 and colour:
        if alpha:  # RGBA as the file says: drop alpha
            a = a[..., :3]
        if a.shape[-1] > 1 and all(np.array_equal(a[..., 0], a[..., c]) for c in
                                   range(1, a.shape[-1])):
            return a[..., 0], None
        if gray:
            from napari_unet.core.normalize import to_gray

            return to_gray(a, rule=gray), None
        return a, -1
    raise CLIError(
        f"{path}: expected a 2D image (H, W) or colour (H, W, 3|4), got shape {a.shape}, a "
        "stack of planes; stacks are not taken as colour channels: give --ndim 3 to train a "
        "3D U-Net on the volume, or --channel-axis N if axis N holds the channels"
    )


def _read_volume(path: Path, a: np.ndarray, *, gray: str | None, channel_axis: int | None):
    """A 3D stack ``(Z, Y, X)`` (``channel_axis`` None) or ``(Z, Y, X, C)`` (``-1``)."""
    if channel_axis is not None:
        if a.ndim < 4 or not -a.ndim <= channel_axis < a.ndim:
            raise CLIError(
                f"--channel-axis: {path} has shape {a.shape}, so axis {channel_axis} is "
                + ("not a channel axis of a volume (a gray stack (Z, Y, X) has none); drop "
                   "--channel-axis" if a.ndim < 4 else
                   f"out of range; expected -{a.ndim}..{a.ndim - 1}")
            )
        a = np.moveaxis(a, channel_axis, -1)
        a = a.reshape(*[s for s in a.shape[:-1] if s != 1], a.shape[-1]) if a.ndim > 4 else a
    else:
        a = np.squeeze(a) if a.ndim > 3 else a
        if a.ndim == 4 and _colour_layout(path, a[0])[0]:  # an RGB(A) stack, as the file says
            a = a[..., :3]
            channel_axis = -1
    _finite(path, a)
    if a.ndim == 3 and channel_axis is None:
        return a, None
    if a.ndim == 4 and channel_axis is not None:
        if all(np.array_equal(a[..., 0], a[..., c]) for c in range(1, a.shape[-1])):
            return a[..., 0], None
        if gray:
            return a.astype(np.float32).mean(axis=-1), None
        return a, -1
    if a.ndim == 2:
        raise CLIError(
            f"{path}: expected a 3D stack (Z, Y, X) with --ndim 3, got a 2D image of shape "
            f"{a.shape}; drop --ndim 3 to train a 2D U-Net on images"
        )
    raise CLIError(
        f"{path}: expected a 3D stack (Z, Y, X) with --ndim 3, got shape {a.shape}; give "
        "--channel-axis N if axis N holds the channels"
    )


def read_labels(
    path: str | os.PathLike, *, shape: tuple[int, ...] | None = None, ndim: int = 2
) -> np.ndarray:
    """Read a label image (instance ids or a binary mask) as int32, 2D or with ``ndim=3`` a
    3D stack; check ``shape`` if given."""
    path = Path(path)
    a = _imread(path)
    if ndim == 2 and a.ndim == 3 and a.shape[-1] in (3, 4) and np.all(a[..., :3] == a[..., :1]):
        a = a[..., 0]  # gray saved as RGB(A)
    a = np.squeeze(a) if a.ndim > ndim else a
    if a.ndim != ndim:
        fix = ("; for volumes (TIFF stacks) train a 3D U-Net with --ndim 3" if a.ndim == 3
               else "; drop --ndim 3 to train on 2D images" if a.ndim == 2 else "")
        raise CLIError(f"{path}: expected a {ndim}D label image, got shape {a.shape}{fix}")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise CLIError(f"{path}: expected integer labels, got non-integer {a.dtype} values")
    elif not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise CLIError(f"{path}: expected integer labels, got dtype {a.dtype}")
    if a.min() < 0 or a.max() > np.iinfo(np.int32).max:
        raise CLIError(f"{path}: label values must lie in 0..2**31-1, got {a.min()}..{a.max()}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise CLIError(f"{path}: labels of shape {a.shape} do not match the image's {tuple(shape)}")
    return a.astype(np.int32)


def read_pairs(
    images: Sequence[str | os.PathLike],
    labels: Sequence[str | os.PathLike],
    annotated: Sequence[str | os.PathLike] | None = None,
    *,
    gray: str | None = None,
    background: Sequence[str | os.PathLike] | None = None,
    channel_axis: int | None = None,
    ndim: int = 2,
) -> list[dict]:
    """Read paired images, labels and (optionally) annotated and background masks; 2D images
    or, with ``ndim=3``, 3D TIFF stacks ``(Z, Y, X)``.

    Returns a list of dicts with keys ``image``, ``labels``, ``annotated`` (bool array or None),
    ``background`` (bool array or None; masks paired with the images by name like the labels),
    ``channel_axis``, ``path`` (the image's path) and ``colour`` (whether the file's channels
    are not all equal, also after ``gray``). All images must have the same channels; ``gray``
    converts colour images to gray by that rule (:func:`read_image`).
    """
    img_paths = expand_paths(images, what="--images")
    lab_paths = [b for _, b in pair_paths(img_paths, expand_paths(labels, what="--labels"))]
    ann_paths: list[Path | None] = [None] * len(img_paths)
    if annotated:
        ann_paths = [
            b
            for _, b in pair_paths(
                img_paths, expand_paths(annotated, what="--annotated"), what="--annotated"
            )
        ]
    bg_paths: list[Path | None] = [None] * len(img_paths)
    if background:
        bg_paths = [b for _, b in pair_paths(
            img_paths, expand_paths(background, what="--background"), what="--background")]
    out = []
    channels = None
    for ip, lp, ap, bp in zip(img_paths, lab_paths, ann_paths, bg_paths, strict=True):
        image, axis = read_image(ip, gray=None if ndim == 2 else gray,
                                 channel_axis=channel_axis, ndim=ndim)
        colour = axis is not None  # read_image gives a gray image stored as RGB as gray
        if gray and ndim == 2 and colour:
            from napari_unet.core.normalize import to_gray

            image, axis = to_gray(image, rule=gray), None
        hw = image.shape[:ndim]
        n_ch = 1 if axis is None else image.shape[-1]
        if channels is None:
            channels = n_ch
        elif n_ch != channels:
            raise CLIError(
                f"{ip}: has {n_ch} channel(s) but earlier images have {channels}; all images "
                "of one model need the same channels (convert them to gray, e.g. with --gray)"
            )
        lab = read_labels(lp, shape=hw, ndim=ndim)
        ann = None if ap is None else read_labels(ap, shape=hw, ndim=ndim) > 0
        bg = None if bp is None else read_labels(bp, shape=hw, ndim=ndim) > 0
        out.append({"image": image, "labels": lab, "annotated": ann, "channel_axis": axis,
                    "path": ip, "background": bg, "colour": colour})
    return out


def write_image(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array as TIFF (``.tif``/``.tiff``) or PNG (8/16-bit integers) by suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, array)
        return
    import imageio.v3 as iio

    iio.imwrite(path, array)
