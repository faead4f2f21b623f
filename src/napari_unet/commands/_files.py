"""Reading image / label files for the command line: folders or file lists of TIFF/PNG.

Every problem (missing file, unreadable file, unpaired image, wrong shape) raises
:class:`napari_unet.cli.CLIError` with one line that names the file, so the user sees no traceback.

Images come back as ``(array, channel_axis)``: ``(H, W)`` with ``channel_axis=None``, or
``(H, W, C)`` / ``(C, H, W)`` with the axis of the (at most 4) channels; an alpha channel is dropped
and an RGB image whose three channels are equal becomes gray ``(H, W)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_unet.cli import CLIError

__all__ = [
    "SUFFIXES",
    "expand_paths",
    "pair_paths",
    "read_image",
    "read_labels",
    "read_pairs",
    "write_image",
]

#: File suffixes read from folders.
SUFFIXES = (".tif", ".tiff", ".png")
_MAX_CHANNELS = 4


def expand_paths(paths: Sequence[str | os.PathLike] | str | os.PathLike, *, what: str) -> list[Path]:
    """Files named by ``paths``: each entry a file or a folder (its TIFF/PNG files, sorted).

    ``what`` names the option in error messages (e.g. ``"--images"``).
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out: list[Path] = []
    for entry in paths:
        p = Path(entry)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SUFFIXES)
            if not found:
                raise CLIError(f"{what}: folder {str(p)!r} holds no {'/'.join(SUFFIXES)} files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise CLIError(f"{what}: {str(p)!r} does not exist")
    if not out:
        raise CLIError(f"{what}: no files given")
    return out


def _key(path: Path) -> str:
    """Pairing key: the file name without suffixes (``a.ome.tif`` → ``a``)."""
    name = path.name
    while Path(name).suffix.lower() in (*SUFFIXES, ".ome"):
        name = Path(name).stem
    return name


def pair_paths(
    images: Sequence[Path], others: Sequence[Path], *, what: str = "--labels"
) -> list[tuple[Path, Path]]:
    """Pair each image file with one file of ``others``.

    By name when every image name has a match (``img/01.png`` ↔ ``lab/01.tif``), else by order
    when both lists are equally long and the names are not all distinct matches; otherwise a
    CLIError names the first unpaired file.
    """
    by_name = {}
    for o in others:
        by_name.setdefault(_key(o), []).append(o)
    if all(len(by_name.get(_key(i), [])) == 1 for i in images) and len(images) == len(others):
        return [(i, by_name[_key(i)][0]) for i in images]
    if len(images) == len(others) and not set(map(_key, images)) & set(by_name):
        return list(zip(images, others, strict=True))  # different naming schemes: pair by order
    for i in images:
        if _key(i) not in by_name:
            raise CLIError(
                f"{what}: no file named like image {i.name!r} (found {len(others)} file(s) for "
                f"{len(images)} image(s)); give matching names or equally long lists"
            )
    raise CLIError(
        f"{what}: {len(others)} file(s) do not pair one-to-one with {len(images)} image(s)"
    )


def _imread(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path))
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except Exception as err:  # any reader failure becomes one line naming the file
        raise CLIError(f"cannot read {str(path)!r}: {type(err).__name__}: {err}") from None


def read_image(path: str | os.PathLike, *, gray: bool = False) -> tuple[np.ndarray, int | None]:
    """Read a 2D image (gray or up to 4 channels); returns ``(array, channel_axis)``.

    ``gray=True`` averages colour channels into one (float32).

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
    a = np.squeeze(a) if a.ndim > 2 and 1 in a.shape else a
    if a.ndim == 2:
        return a, None
    if a.ndim == 3:
        axis = -1 if a.shape[-1] <= _MAX_CHANNELS else 0 if a.shape[0] <= _MAX_CHANNELS else None
        if axis is not None:
            a = np.moveaxis(a, axis, -1)
            if a.shape[-1] == 4:  # RGBA: drop alpha
                a = a[..., :3]
            if a.shape[-1] == 3 and np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(
                a[..., 0], a[..., 2]
            ):
                return a[..., 0], None
            if gray:
                return a.astype(np.float32).mean(axis=-1), None
            return a, -1
    raise CLIError(
        f"{path}: expected a 2D image (H, W) or (H, W, C) with C <= {_MAX_CHANNELS}, got shape "
        f"{a.shape}; stacks and volumes are not supported for training"
    )


def read_labels(path: str | os.PathLike, *, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a 2D label image (instance ids or a binary mask) as int32; check ``shape`` if given."""
    path = Path(path)
    a = _imread(path)
    if a.ndim == 3 and a.shape[-1] in (3, 4) and np.all(a[..., :3] == a[..., :1]):
        a = a[..., 0]  # gray saved as RGB(A)
    a = np.squeeze(a) if a.ndim > 2 else a
    if a.ndim != 2:
        raise CLIError(f"{path}: expected a 2D label image, got shape {a.shape}")
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
    gray: bool = False,
    background: Sequence[str | os.PathLike] | None = None,
) -> list[dict]:
    """Read paired images, labels and (optionally) annotated and background masks.

    Returns a list of dicts with keys ``image``, ``labels``, ``annotated`` (bool array or None),
    ``background`` (bool array or None; masks paired with the images by name like the labels),
    ``channel_axis`` and ``path`` (the image's path). All images must have the same channels;
    ``gray=True`` converts colour images to gray.
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
        image, axis = read_image(ip, gray=gray)
        hw = image.shape[:2]
        n_ch = 1 if axis is None else image.shape[-1]
        if channels is None:
            channels = n_ch
        elif n_ch != channels:
            raise CLIError(
                f"{ip}: has {n_ch} channel(s) but earlier images have {channels}; all images "
                "of one model need the same channels (convert them to gray, e.g. with --gray)"
            )
        lab = read_labels(lp, shape=hw)
        ann = None if ap is None else read_labels(ap, shape=hw) > 0
        bg = None if bp is None else read_labels(bp, shape=hw) > 0
        out.append({"image": image, "labels": lab, "annotated": ann, "channel_axis": axis,
                    "path": ip, "background": bg})
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
