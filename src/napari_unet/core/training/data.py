"""Image/label pairs for training (2D images or 3D volumes) and what training computes from
them once: the normalised, mirror-padded image, its target and its weight map
(:func:`prepare_pairs`), and the target and weights of an augmented patch
(:func:`targets_from_instances`). Patch sampling and the validation split are in
:mod:`napari_unet.core.training.patches`; the normalisation in :mod:`napari_unet.core.normalize`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from napari_unet.core.normalize import DEFAULT_NORMALIZATION, normalize

__all__ = [
    "PreparedImage",
    "TrainingPair",
    "TrainingTarget",
    "as_training_pairs",
    "prepare_pairs",
    "targets_from_instances",
    "to_channels_first",
    "training_target",
]


@dataclasses.dataclass
class TrainingPair:
    """One training image (2D) or volume (3D) with its labels and, optionally, the mask of
    annotated pixels (voxels).

    Parameters
    ----------
    image : ndarray
        ``(H, W)`` or, with ``ndim=3``, ``(Z, Y, X)``; or with channels along ``channel_axis``;
        any real dtype.
    labels : ndarray, the image's spatial shape
        Instance ids or a binary mask (see :func:`napari_unet.core.targets.to_instances`).
    annotated : bool ndarray, the spatial shape, optional
        True where the annotation is complete; the rest is ignored by the loss. Default: all
        (with ``sparse``: see below). Sparse slices of a volume: True on the annotated planes
        (:func:`napari_unet.core.targets.slices_mask`), so every other voxel has weight 0.
    channel_axis : int, optional
        Axis of the channels in ``image``; None for a single-channel image.
    background : ndarray, the spatial shape, optional, keyword only
        Pixels the user marked as background (non-zero); they count in the loss wherever they are.
    sparse : bool, keyword only
        False (default): ``labels`` is a complete annotation (inside ``annotated``). True: only
        the painted cells, a band around them (or the ``annotated`` regions) and ``background``
        count; see :func:`napari_unet.core.targets.counted_area`. The GUI trains this way.
    ndim : {2, 3}, optional, keyword only
        Spatial dimensions (the model's ``ndim``); None: 2.
    spacing : sequence of float, optional, keyword only
        Pixel (voxel) size per spatial axis, e.g. ``(4.0, 1.0, 1.0)``: the border weights'
        distances are anisotropic (:func:`napari_unet.core.weights.border_weight_map`).

    Examples
    --------
    >>> pair = TrainingPair(np.zeros((3, 8, 9)), np.zeros((8, 9), int), channel_axis=0)
    >>> pair.shape, pair.channels
    ((8, 9), 3)
    >>> TrainingPair(np.zeros((4, 8, 9)), np.zeros((4, 8, 9), int), ndim=3).shape
    (4, 8, 9)
    """

    image: np.ndarray
    labels: np.ndarray
    annotated: np.ndarray | None = None
    channel_axis: int | None = None
    background: np.ndarray | None = dataclasses.field(default=None, kw_only=True)
    sparse: bool = dataclasses.field(default=False, kw_only=True)
    ndim: int | None = dataclasses.field(default=None, kw_only=True)
    spacing: tuple[float, ...] | None = dataclasses.field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image)
        self.labels = np.asarray(self.labels)
        if not (np.issubdtype(self.image.dtype, np.number) or self.image.dtype == bool) or (
            np.iscomplexobj(self.image)
        ):
            raise TypeError(f"image: expected a real-valued array, got dtype {self.image.dtype}")
        nd = 2 if self.ndim is None else self.ndim
        if isinstance(nd, bool) or nd not in (2, 3):
            raise ValueError(f"ndim: expected 2 (images) or 3 (volumes), got {self.ndim!r}")
        self.ndim = nd
        want = nd if self.channel_axis is None else nd + 1
        if self.image.ndim != want:
            raise ValueError(
                f"image: expected {want} dimensions for ndim={nd} with channel_axis="
                f"{self.channel_axis}, got shape {self.image.shape}{self._hint(self.image.ndim)}"
            )
        if self.labels.shape != self.shape:
            extra = self._hint(self.labels.ndim + (self.channel_axis is not None))
            raise ValueError(
                f"labels: expected the image's spatial shape {self.shape}, got "
                f"{self.labels.shape}{extra}"
            )
        for name in ("annotated", "background"):
            mask = getattr(self, name)
            if mask is not None:
                mask = np.asarray(mask)
                if mask.shape != self.shape:
                    raise ValueError(f"{name}: expected the image's spatial shape {self.shape}, "
                                     f"got {mask.shape}")
                setattr(self, name, mask != 0)
        if self.spacing is not None:
            from napari_unet.core.checks import check_spacing

            self.spacing = check_spacing(self.spacing, nd)
        self.sparse = bool(self.sparse)

    def _hint(self, got: int) -> str:
        """How to fix a dimension mismatch (the other ndim, or channel_axis)."""
        c = self.channel_axis is not None
        if got == 3 + c and self.ndim == 2:
            return ("; a volume (Z, Y, X)? pass ndim=3 (napari-unet train --ndim 3)"
                    + ("" if c else ", or channel_axis for a 2D image with channels"))
        if got == 2 + c and self.ndim == 3:
            return "; a 2D image? pass ndim=2 (or leave ndim out)"
        return "" if c else "; pass channel_axis for channels"

    def counted(self) -> np.ndarray:
        """Bool, the spatial shape: the pixels that count in the loss (``targets.counted_area``)."""
        from napari_unet.core.targets.sparse import counted_area

        return counted_area(self.labels, annotated=self.annotated, background=self.background,
                            sparse=self.sparse)

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial ``(H, W)`` or ``(Z, Y, X)``."""
        if self.channel_axis is None:
            return tuple(self.image.shape)
        axis = self.channel_axis % self.image.ndim
        return tuple(s for i, s in enumerate(self.image.shape) if i != axis)

    @property
    def channels(self) -> int:
        return 1 if self.channel_axis is None else int(self.image.shape[self.channel_axis])


def as_training_pairs(pairs) -> list[TrainingPair]:
    """TrainingPair objects from TrainingPairs or ``(image, labels[, annotated])`` tuples.

    Examples
    --------
    >>> len(as_training_pairs([(np.zeros((4, 4)), np.zeros((4, 4), int))]))
    1
    """
    if isinstance(pairs, TrainingPair | tuple):
        pairs = [pairs]
    out = []
    for i, p in enumerate(pairs):
        if isinstance(p, TrainingPair):
            out.append(p)
        elif isinstance(p, tuple | list) and len(p) in (2, 3):
            out.append(TrainingPair(*p))
        else:
            raise TypeError(
                f"pairs[{i}]: expected a TrainingPair or an (image, labels[, annotated]) tuple, "
                f"got {type(p).__name__}"
            )
    if not out:
        raise ValueError("pairs: expected at least one (image, labels) pair, got none")
    channels = {p.channels for p in out}
    if len(channels) > 1:
        raise ValueError(f"pairs: all images need the same number of channels, got {channels}")
    dims = {p.ndim for p in out}
    if len(dims) > 1:
        raise ValueError(f"pairs: all pairs need the same ndim (2D images or 3D volumes), got "
                         f"{sorted(dims)}; train 2D and 3D models separately")
    return out


def to_channels_first(image: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """``(C, *spatial)`` view of an image or volume (``C = 1`` when ``channel_axis`` is None).

    Examples
    --------
    >>> to_channels_first(np.zeros((5, 6, 2)), -1).shape
    (2, 5, 6)
    """
    image = np.asarray(image)
    return image[None] if channel_axis is None else np.moveaxis(image, channel_axis, 0)


def _inner(pad: int, shape: Sequence[int]) -> tuple[slice, ...]:
    """The unpadded image's slices in padded coordinates."""
    return tuple(slice(pad, pad + s) for s in shape)


@dataclasses.dataclass
class PreparedImage:
    """A normalised image with its training target and weight map, mirror-padded by ``pad``.

    ``image`` is float32 ``(C, *(S + 2 pad))`` for the spatial shape ``S`` (2D or 3D);
    ``target`` (uint8) and ``weights`` (float32, 0 outside the image, outside the annotation and
    in validation regions) are ``S + 2 pad``.
    """

    image: np.ndarray
    target: np.ndarray
    weights: np.ndarray
    pad: int
    shape: tuple[int, ...]
    labels: np.ndarray  # instance ids (S), 0 outside the annotation, for validation
    annotated: np.ndarray  # bool (S)
    #: instance ids (int32) padded like ``target`` (0 in the padding): what the augmentation warps
    instances: np.ndarray | None = None
    #: bool, padded: the pixels that count in the loss (annotated, inside the image, not held out)
    counted: np.ndarray | None = None
    #: float32 (num_classes,): the image's class-balance weights w_c
    class_weight: np.ndarray | None = None
    #: pixel (voxel) size per axis the weights were computed with (None: isotropic)
    spacing: tuple[float, ...] | None = None

    @property
    def ndim(self) -> int:
        """Spatial dimensions (2 or 3)."""
        return len(self.shape)

    def exclude(self, region: tuple[slice, ...]) -> None:
        """Give weight 0 to a region (in unpadded coordinates), e.g. one kept for validation."""
        p = self.pad
        box = tuple(slice(s.start + p, s.stop + p) for s in region)
        self.weights[box] = 0.0
        if self.counted is not None:
            self.counted[box] = False


@dataclasses.dataclass
class TrainingTarget:
    """What training learns from one image's labels (:func:`training_target`): the instance
    ids that count (0 elsewhere), the counted area, the per-pixel target, its mask and the
    weight map (0 where nothing counts)."""

    instances: np.ndarray
    counted: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    weights: np.ndarray


def training_target(labels, *, annotated=None, background=None, sparse: bool = False,
                    num_classes: int = 2, w0: float = 10.0, sigma: float = 5.0,
                    spacing: Sequence[float] | None = None,
                    class_balance: bool = True, tissue: bool = False) -> TrainingTarget:
    """The target and weight map training uses for one image's (or volume's) labels; what
    :func:`prepare_pairs` computes and the Weight map widget shows.

    What counts is :func:`napari_unet.core.targets.counted_area` (the painted cells and a band
    around them, or the annotated regions, and the background strokes; with ``sparse=False``
    the labels are complete inside ``annotated``). Labels outside the counted area are unknown:
    they shape neither the separation borders nor the border distances (a volume labelled
    densely but annotated on a few slices trains exactly as one labelled on those slices only).
    ``tissue``: the tissue target (background, cell, wall: ``make_target(..., tissue=True)``,
    ``num_classes=3``), for cells that fill the space.

    Examples
    --------
    >>> labels = np.zeros((8, 12), int); labels[2:6, 1:5] = 1; labels[2:6, 7:11] = 2
    >>> ann = np.zeros((8, 12), bool); ann[:, :6] = True  # only the left cell counts
    >>> t = training_target(labels, annotated=ann)
    >>> int(t.instances.max()), bool(t.weights[:, 6:].any())
    (1, False)
    """
    from napari_unet.core.targets.instances import to_instances
    from napari_unet.core.targets.sparse import counted_area
    from napari_unet.core.targets.target import make_target
    from napari_unet.core.weights.border import border_weight_map

    inst = to_instances(labels)
    counted = counted_area(inst, annotated=annotated, background=background, sparse=sparse)
    inst = np.where(counted, inst, 0).astype(inst.dtype, copy=False)
    target, mask = make_target(inst, annotated=counted, num_classes=num_classes, tissue=tissue)
    weights = border_weight_map(inst, w0=w0, sigma=sigma, class_balance=class_balance,
                                annotated=counted, num_classes=num_classes, spacing=spacing,
                                tissue=tissue)
    weights = (weights * mask).astype(np.float32)
    return TrainingTarget(inst, counted, target, mask, weights)


def prepare_pairs(
    pairs: Sequence[TrainingPair],
    *,
    pad: int,
    cover: int | Sequence[int] = 0,
    normalization: dict | None = None,
    num_classes: int = 2,
    w0: float = 10.0,
    sigma: float = 5.0,
    spacing: Sequence[float] | None = None,
    tissue: bool = False,
) -> list[PreparedImage]:
    """Normalise each image and compute its target and weight map once (not per step).

    The image is mirror-padded by ``pad`` on every side (the paper's extrapolation), or more
    when needed for a window of ``cover`` pixels (one per axis, or one for all) starting at the
    image origin to fit; target and weights are zero-padded, so padded pixels never count in the
    loss. Labels outside the pixels that count (``TrainingPair.counted``) are dropped first, so
    they never reach the target or the weights. ``spacing`` (one size per axis) makes the
    border weights anisotropic; a pair's own ``spacing`` takes precedence. ``tissue``: the
    tissue target (:func:`training_target`).

    Examples
    --------
    >>> from napari_unet.core.synthetic import synthetic_cells_3d
    >>> vol, lab = synthetic_cells_3d((8, 24, 24), radius=5, seed=0)
    >>> (prep,) = prepare_pairs([TrainingPair(vol, lab, ndim=3)], pad=3, spacing=(2, 1, 1))
    >>> prep.image.shape, prep.weights.shape, prep.spacing
    ((1, 14, 30, 30), (14, 30, 30), (2.0, 1.0, 1.0))
    """
    from napari_unet.core.weights.border import class_weight_vector

    norm = dict(DEFAULT_NORMALIZATION if normalization is None else normalization)
    out = []
    for pair in pairs:
        nd = len(pair.shape)
        space = pair.spacing if pair.spacing is not None else spacing
        if space is not None:
            from napari_unet.core.checks import check_spacing

            space = check_spacing(space, nd)
        img = to_channels_first(pair.image, pair.channel_axis)
        img = normalize(img, low=norm["low"], high=norm["high"], channel_axis=0,
                        invert=norm.get("invert", False))
        taught = training_target(pair.labels, annotated=pair.annotated,
                                 background=pair.background, sparse=pair.sparse,
                                 num_classes=num_classes, w0=w0, sigma=sigma, spacing=space,
                                 tissue=tissue)
        inst, target, mask, weights = taught.instances, taught.target, taught.mask, taught.weights
        mode = "reflect" if min(pair.shape) > 1 else "edge"
        covers = np.broadcast_to(np.asarray(cover, dtype=np.int64), (nd,))
        p = max(int(pad), *(int(c) - s for c, s in zip(covers, pair.shape, strict=True)))
        ids = inst if inst.dtype == np.int32 else np.unique(inst, return_inverse=True)[1]
        out.append(
            PreparedImage(
                image=np.pad(img, ((0, 0),) + ((p, p),) * nd, mode=mode),
                target=np.pad(target, p),
                weights=np.pad(weights, p),
                pad=p,
                shape=pair.shape,
                labels=np.where(mask > 0, inst, 0),
                annotated=mask > 0,
                instances=np.pad(ids.reshape(inst.shape).astype(np.int32, copy=False), p),
                counted=np.pad(weights > 0, p),
                class_weight=class_weight_vector(target, annotated=mask > 0,
                                                 num_classes=num_classes),
                spacing=space,
            )
        )
    return out


def targets_from_instances(
    instances: np.ndarray,
    counted: np.ndarray,
    *,
    class_weight: np.ndarray,
    num_classes: int = 2,
    w0: float = 10.0,
    sigma: float = 5.0,
    spacing: Sequence[float] | None = None,
    tissue: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Target and weight map of one (augmented) patch, 2D or 3D, from its instance ids.

    The separation borders and the border term are derived from the instances as they are
    (after the warp), so no warped cell can touch another one in the target; ``counted`` (the
    warped annotated area) sets the weight to 0 elsewhere, and ``class_weight`` is the image's
    class balance (:func:`napari_unet.core.weights.class_weight_vector`); ``spacing`` (one size
    per axis) makes the border term anisotropic; ``tissue``: the tissue target.

    Returns
    -------
    target : uint8 ndarray, weights : float32 ndarray (the instances' shape)

    Examples
    --------
    >>> inst = np.array([[1, 1, 2, 2, 0]])
    >>> t, w = targets_from_instances(inst, np.ones((1, 5), bool), class_weight=[1.0, 1.0])
    >>> t.tolist(), bool(w[0, 1] > w[0, 0])
    ([[1, 0, 0, 1, 0]], True)
    """
    from napari_unet.core.targets.target import make_target
    from napari_unet.core.weights.border import border_weight_map

    target, _ = make_target(instances, annotated=counted, num_classes=num_classes, tissue=tissue)
    weights = border_weight_map(instances, w0=w0, sigma=sigma, annotated=counted,
                                num_classes=num_classes, class_weight=class_weight,
                                spacing=spacing, tissue=tissue)
    return target, weights
