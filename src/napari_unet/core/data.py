"""Image/label pairs for training: normalisation, patch sampling, validation split.

Normalisation is robust and per image: each channel is mapped so that its ``low`` and ``high``
percentiles become 0 and 1. The settings are stored in the model's metadata so that prediction
normalises the same way. ``invert`` makes the polarity consistent: ``"auto"`` turns a channel
with a bright background (brightfield, H&E converted to gray: dark nuclei) into bright objects
on a dark background, like fluorescence (:func:`inverted_channels`). New gray models store
``"invert": "auto"``; metadata without the key (older models) never inverts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from napari_unet.core.checks import check_finite

__all__ = [
    "DEFAULT_NORMALIZATION",
    "PatchSampler",
    "PreparedImage",
    "TrainingPair",
    "ValidationRegion",
    "as_training_pairs",
    "inverted_channels",
    "normalize",
    "prepare_pairs",
    "split_validation",
    "targets_from_instances",
    "to_channels_first",
]

#: Normalisation stored with every model unless the user chooses otherwise.
DEFAULT_NORMALIZATION: dict = {"method": "percentile", "low": 1.0, "high": 99.8}


def stored_normalization(metadata: dict | None) -> dict | None:
    """The percentiles ``{"low", "high"}`` a model was trained with, or None for no
    normalisation; read once from ``metadata["normalization"]`` (default: 1 and 99.8).

    Examples
    --------
    >>> stored_normalization(None), stored_normalization({"normalization": {"method": "none"}})
    ({'low': 1.0, 'high': 99.8}, None)
    """
    norm = dict((metadata or {}).get("normalization") or DEFAULT_NORMALIZATION)
    method = norm.get("method", "percentile")
    if method in (None, "none"):
        return None
    if method != "percentile":
        raise ValueError(
            f"metadata['normalization']: unknown method {method!r}; expected 'percentile' or "
            "'none' (was the model file written by another tool?)"
        )
    out = {"low": float(norm.get("low", 1.0)), "high": float(norm.get("high", 99.8))}
    invert = _check_invert(norm.get("invert", False), "metadata['normalization']['invert']")
    if invert:
        out["invert"] = invert
    return out


def _check_invert(invert, name: str = "invert"):
    if invert is None or invert is False:
        return False
    if invert is True or invert == "auto":
        return invert
    raise ValueError(f"{name}: expected False, True or 'auto', got {invert!r}")


def inverted_channels(median, lo, hi, invert=False) -> np.ndarray:
    """Which channels :func:`normalize` inverts: all (``invert=True``), none (False), or with
    ``"auto"`` those whose median lies above the midpoint of their ``[lo, hi]`` percentile range
    (a bright background). On the 100 DSB2018 images (gray-converted) the normalised median is
    0.60-0.94 for all 18 with nuclei darker than the background (16 colour, 2 gray brightfield)
    and at most 0.09 for the 82 fluorescence images.

    >>> inverted_channels(np.array([200.0, 10.0]), 0.0, 255.0, "auto").tolist()
    [True, False]
    """
    invert = _check_invert(invert)
    median, lo, hi = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (median, lo, hi)))
    if invert == "auto":
        return median > (lo + hi) / 2
    return np.full(median.shape, bool(invert))


def normalize(
    image: np.ndarray,
    *,
    low: float = 1.0,
    high: float = 99.8,
    channel_axis: int | None = None,
    eps: float = 1e-6,
    invert: bool | str = False,
) -> np.ndarray:
    """Map the ``low``/``high`` percentiles of each channel to 0/1 (values outside are kept).

    Parameters
    ----------
    image : ndarray
        Any real dtype, any number of dimensions.
    low, high : float
        Percentiles (0–100) mapped to 0 and 1.
    channel_axis : int, optional
        Axis of the channels, normalised independently; None: the whole array at once.
    eps : float
        Added to the percentile range so a constant image gives zeros, not NaN.
    invert : bool or "auto"
        Map ``high`` to 0 and ``low`` to 1 instead (``(hi - x) / (hi - lo + eps)``): True for
        every channel, ``"auto"`` for channels with a bright background
        (:func:`inverted_channels`: median above the middle of the range).

    Returns
    -------
    float32 ndarray of the same shape.

    Examples
    --------
    >>> out = normalize(np.arange(101, dtype=np.uint8), low=0, high=100)
    >>> float(out[0]), round(float(out[-1]), 4)
    (0.0, 1.0)
    >>> bright = np.full((4, 4), 200.0); bright[1, 1] = 10.0  # dark object, bright background
    >>> float(normalize(bright, low=0, high=100, invert="auto")[1, 1])
    1.0
    """
    image = np.asarray(image)
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise TypeError(f"image: expected a real-valued array, got dtype {image.dtype}")
    if np.iscomplexobj(image):
        raise TypeError("image: expected a real-valued array, got a complex one")
    if not 0 <= low < high <= 100:
        raise ValueError(f"low, high: expected 0 <= low < high <= 100, got {low!r}, {high!r}")
    check_finite(image, what="image")  # the NaN rule of napari_unet.core.checks, everywhere
    invert = _check_invert(invert)
    x = image.astype(np.float32, copy=False)
    other = None if channel_axis is None else tuple(
        a for a in range(x.ndim) if a != channel_axis % x.ndim)
    lo, hi = np.percentile(x, [low, high], axis=other, keepdims=other is not None)
    if not invert:
        return ((x - lo) / (hi - lo + eps)).astype(np.float32)
    median = np.median(x, axis=other, keepdims=other is not None) if invert == "auto" else lo
    flip = inverted_channels(median, lo, hi, invert)
    return np.where(flip, (hi - x) / (hi - lo + eps), (x - lo) / (hi - lo + eps)).astype(
        np.float32)


@dataclasses.dataclass
class TrainingPair:
    """One 2D training image with its labels and, optionally, the mask of annotated pixels.

    Parameters
    ----------
    image : ndarray
        ``(H, W)``, or with channels along ``channel_axis``; any real dtype.
    labels : ndarray (H, W)
        Instance ids or a binary mask (see :func:`napari_unet.core.targets.to_instances`).
    annotated : bool ndarray (H, W), optional
        True where the annotation is complete; the rest is ignored by the loss. Default: all
        (with ``sparse``: see below).
    channel_axis : int, optional
        Axis of the channels in ``image``; None for a single-channel ``(H, W)`` image.
    background : ndarray (H, W), optional, keyword only
        Pixels the user marked as background (non-zero); they count in the loss wherever they are.
    sparse : bool, keyword only
        False (default): ``labels`` is a complete annotation (inside ``annotated``). True: only
        the painted cells, a band around them (or the ``annotated`` regions) and ``background``
        count; see :func:`napari_unet.core.targets.counted_area`. The GUI trains this way.

    Examples
    --------
    >>> pair = TrainingPair(np.zeros((3, 8, 9)), np.zeros((8, 9), int), channel_axis=0)
    >>> pair.shape, pair.channels
    ((8, 9), 3)
    """

    image: np.ndarray
    labels: np.ndarray
    annotated: np.ndarray | None = None
    channel_axis: int | None = None
    background: np.ndarray | None = dataclasses.field(default=None, kw_only=True)
    sparse: bool = dataclasses.field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image)
        self.labels = np.asarray(self.labels)
        if not (np.issubdtype(self.image.dtype, np.number) or self.image.dtype == bool) or (
            np.iscomplexobj(self.image)
        ):
            raise TypeError(f"image: expected a real-valued array, got dtype {self.image.dtype}")
        want = 2 if self.channel_axis is None else 3
        if self.image.ndim != want:
            hint = "" if self.channel_axis is not None else "; pass channel_axis for channels"
            raise ValueError(
                f"image: expected {want} dimensions with channel_axis={self.channel_axis}, got "
                f"shape {self.image.shape}{hint}"
            )
        if self.labels.shape != self.shape:
            raise ValueError(
                f"labels: expected the image's spatial shape {self.shape}, got "
                f"{self.labels.shape}"
            )
        if self.annotated is not None:
            self.annotated = np.asarray(self.annotated)
            if self.annotated.shape != self.shape:
                raise ValueError(
                    f"annotated: expected the image's spatial shape {self.shape}, got "
                    f"{self.annotated.shape}"
                )
            self.annotated = self.annotated != 0
        if self.background is not None:
            self.background = np.asarray(self.background)
            if self.background.shape != self.shape:
                raise ValueError(
                    f"background: expected the image's spatial shape {self.shape}, got "
                    f"{self.background.shape}"
                )
            self.background = self.background != 0
        self.sparse = bool(self.sparse)

    def counted(self) -> np.ndarray:
        """Bool (H, W): the pixels that count in the loss (``targets.counted_area``)."""
        from napari_unet.core.targets import counted_area

        return counted_area(self.labels, annotated=self.annotated, background=self.background,
                            sparse=self.sparse)

    @property
    def shape(self) -> tuple[int, int]:
        """Spatial ``(H, W)``."""
        if self.channel_axis is None:
            return tuple(self.image.shape)
        axis = self.channel_axis % 3
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
    return out


def to_channels_first(image: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """``(C, H, W)`` view of a 2D image (``C = 1`` when ``channel_axis`` is None).

    Examples
    --------
    >>> to_channels_first(np.zeros((5, 6, 2)), -1).shape
    (2, 5, 6)
    """
    image = np.asarray(image)
    return image[None] if channel_axis is None else np.moveaxis(image, channel_axis, 0)


@dataclasses.dataclass
class PreparedImage:
    """A normalised image with its training target and weight map, mirror-padded by ``pad``.

    ``image`` is float32 ``(C, H + 2 pad, W + 2 pad)``; ``target`` (uint8) and ``weights``
    (float32, 0 outside the image, outside the annotation and in validation regions) are
    ``(H + 2 pad, W + 2 pad)``.
    """

    image: np.ndarray
    target: np.ndarray
    weights: np.ndarray
    pad: int
    shape: tuple[int, int]
    labels: np.ndarray  # instance ids (H, W), 0 outside the annotation, for validation
    annotated: np.ndarray  # bool (H, W)
    #: instance ids (int32) padded like ``target`` (0 in the padding): what the augmentation warps
    instances: np.ndarray | None = None
    #: bool, padded: the pixels that count in the loss (annotated, inside the image, not held out)
    counted: np.ndarray | None = None
    #: float32 (num_classes,): the image's class-balance weights w_c
    class_weight: np.ndarray | None = None

    def exclude(self, region: tuple[slice, slice]) -> None:
        """Give weight 0 to a region (in unpadded coordinates), e.g. one kept for validation."""
        ys, xs = region
        p = self.pad
        self.weights[ys.start + p : ys.stop + p, xs.start + p : xs.stop + p] = 0.0
        if self.counted is not None:
            self.counted[ys.start + p : ys.stop + p, xs.start + p : xs.stop + p] = False


def prepare_pairs(
    pairs: Sequence[TrainingPair],
    *,
    pad: int,
    cover: int = 0,
    normalization: dict | None = None,
    num_classes: int = 2,
    w0: float = 10.0,
    sigma: float = 5.0,
) -> list[PreparedImage]:
    """Normalise each image and compute its target and weight map once (not per step).

    The image is mirror-padded by ``pad`` on every side (the paper's extrapolation), or more
    when needed for a window of ``cover`` pixels starting at the image origin to fit; target and
    weights are zero-padded, so padded pixels never count in the loss.
    """
    from napari_unet.core.targets import counted_area, make_target, to_instances
    from napari_unet.core.weights import border_weight_map, class_weight_vector

    norm = dict(DEFAULT_NORMALIZATION if normalization is None else normalization)
    out = []
    for pair in pairs:
        img = to_channels_first(pair.image, pair.channel_axis)
        img = normalize(img, low=norm["low"], high=norm["high"], channel_axis=0,
                        invert=norm.get("invert", False))
        inst = to_instances(pair.labels)
        counted = counted_area(inst, annotated=pair.annotated, background=pair.background,
                               sparse=pair.sparse)
        target, mask = make_target(inst, annotated=counted, num_classes=num_classes)
        weights = border_weight_map(
            inst, w0=w0, sigma=sigma, annotated=counted, num_classes=num_classes
        )
        weights = (weights * mask).astype(np.float32)
        mode = "reflect" if min(pair.shape) > 1 else "edge"
        p = max(int(pad), int(cover) - min(pair.shape))
        ids = inst if inst.dtype == np.int32 else np.unique(inst, return_inverse=True)[1]
        out.append(
            PreparedImage(
                image=np.pad(img, ((0, 0), (p, p), (p, p)), mode=mode),
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
) -> tuple[np.ndarray, np.ndarray]:
    """Target and weight map of one (augmented) patch, from its instance ids.

    The separation borders and the border term are derived from the instances as they are
    (after the warp), so no warped cell can touch another one in the target; ``counted`` (the
    warped annotated area) sets the weight to 0 elsewhere, and ``class_weight`` is the image's
    class balance (:func:`napari_unet.core.weights.class_weight_vector`).

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
    from napari_unet.core.targets import make_target
    from napari_unet.core.weights import border_weight_map

    target, _ = make_target(instances, num_classes=num_classes)
    weights = border_weight_map(instances, w0=w0, sigma=sigma, annotated=counted,
                                num_classes=num_classes, class_weight=class_weight)
    return target, weights


@dataclasses.dataclass
class ValidationRegion:
    """A rectangle of one prepared image kept for validation, with its weights (before removal)."""

    index: int
    region: tuple[slice, slice]
    weights: np.ndarray | None = None


def split_validation(
    prepared: Sequence[PreparedImage],
    *,
    fraction: float = 0.1,
    min_side: int = 16,
) -> list[ValidationRegion]:
    """Hold out a band of every image's annotated area for validation (split by region).

    The band spans the last ``fraction`` of the bounding box of the image's annotated pixels
    along the box's longer axis (at least ``min_side`` pixels, at most half the box); its
    weights are set to 0 so training never sees its labels. Taking the band inside the
    annotation matters: a band of the whole image can fall where nothing is annotated (e.g. an
    unannotated right quarter), and then prediction and truth are both empty there and the
    validation reports a perfect score at every step. Images without annotated pixels hold out
    nothing. ``fraction=0`` holds out nothing.

    Examples
    --------
    >>> prep = PreparedImage(np.zeros((1, 104, 104), np.float32), np.zeros((104, 104), np.uint8),
    ...                      np.ones((104, 104), np.float32), 2, (100, 100),
    ...                      np.zeros((100, 100), int), np.ones((100, 100), bool))
    >>> split_validation([prep], fraction=0.2)[0].region
    (slice(0, 100, None), slice(80, 100, None))
    >>> prep.annotated[:, 75:] = False  # right quarter not annotated: the band stays out of it
    >>> split_validation([prep], fraction=0.2)[0].region
    (slice(80, 100, None), slice(0, 75, None))
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction: expected a fraction in [0, 1), got {fraction!r}")
    if fraction == 0:
        return []
    out = []
    for i, prep in enumerate(prepared):
        rows = np.flatnonzero(prep.annotated.any(axis=1))
        cols = np.flatnonzero(prep.annotated.any(axis=0))
        if rows.size == 0:
            continue
        box = ((int(rows[0]), int(rows[-1]) + 1), (int(cols[0]), int(cols[-1]) + 1))
        h, w = box[0][1] - box[0][0], box[1][1] - box[1][0]
        axis = 0 if h > w else 1
        lo, hi = box[axis]
        band = min((hi - lo) // 2, max(min_side, math.ceil(fraction * (hi - lo))))
        if band < 1:
            continue
        cut = slice(hi - band, hi)
        region = (cut, slice(*box[1])) if axis == 0 else (slice(*box[0]), cut)
        p = prep.pad
        ys, xs = region
        kept = prep.weights[ys.start + p : ys.stop + p, xs.start + p : xs.stop + p].copy()
        prep.exclude(region)
        out.append(ValidationRegion(i, region, kept))
    return out


class PatchSampler:
    """Random training patches of the network's input size, centred on weighted pixels.

    An image is drawn with probability proportional to its count of pixels with weight > 0, then
    a centre among those pixels: a few annotated cells in a large image are found every time.
    The patch (input size ``tile``) is cut from the mirror-padded image; the training loop takes
    the instance ids and the counted area of the same window (:meth:`sample_instances`), warps
    them with the image and derives target and weights from the warped ids
    (:func:`targets_from_instances`); :meth:`sample` cuts the precomputed target and weights.

    Parameters
    ----------
    prepared : list of PreparedImage
        Padded by at least ``tile // 2 + 1``.
    tile : int
        Input side of the network.
    rng : numpy.random.Generator
    """

    def __init__(self, prepared: Sequence[PreparedImage], *, tile: int, rng: np.random.Generator):
        self.prepared = list(prepared)
        self.tile = int(tile)
        self.rng = rng
        self._centres = []
        for prep in self.prepared:
            if prep.pad < self.tile // 2 + 1:
                raise ValueError(f"prepared: padding {prep.pad} too small for tile {self.tile}")
            p = prep.pad
            h, w = prep.shape
            inner = prep.weights[p : p + h, p : p + w]
            self._centres.append(np.flatnonzero(inner > 0).astype(np.int64))
        counts = np.array([len(c) for c in self._centres], dtype=np.float64)
        if counts.sum() == 0:
            raise ValueError(
                "pairs: no pixel carries weight in the training region (nothing annotated, or "
                "all held out for validation); annotate some cells or lower val_fraction"
            )
        self._p = counts / counts.sum()

    def _draw(self, n: int):
        """``n`` (image index, top, left) windows of side ``tile`` in padded coordinates."""
        t = self.tile
        for _ in range(n):
            i = int(self.rng.choice(len(self.prepared), p=self._p))
            prep = self.prepared[i]
            c = int(self._centres[i][self.rng.integers(len(self._centres[i]))])
            cy, cx = divmod(c, prep.shape[1])
            yield prep, cy + prep.pad - t // 2, cx + prep.pad - t // 2

    def sample_instances(self, n: int):
        """``n`` patches for augmentation before the targets are made (the training loop's).

        Returns image (n, C, T, T) float32, instance ids (n, T, T) int32 (0 in the padding),
        counted (n, T, T) float32 (1 where the loss counts) and the images' class weights
        (n, num_classes) float32.
        """
        t = self.tile
        images, inst, counted, cw = [], [], [], []
        for prep, y0, x0 in self._draw(n):
            if prep.instances is None:
                raise ValueError("prepared: made without instances; use prepare_pairs")
            images.append(prep.image[:, y0 : y0 + t, x0 : x0 + t])
            inst.append(prep.instances[y0 : y0 + t, x0 : x0 + t])
            counted.append(prep.counted[y0 : y0 + t, x0 : x0 + t])
            cw.append(prep.class_weight)
        return (
            np.stack(images).astype(np.float32, copy=False),
            np.stack(inst).astype(np.int32, copy=False),
            np.stack(counted).astype(np.float32),
            np.stack(cw).astype(np.float32),
        )

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` patches: image (n, C, T, T) float32, target (n, T, T) int64, weights (n, T, T)."""
        images, targets, weights = [], [], []
        t = self.tile
        for prep, y0, x0 in self._draw(n):
            images.append(prep.image[:, y0 : y0 + t, x0 : x0 + t])
            targets.append(prep.target[y0 : y0 + t, x0 : x0 + t])
            weights.append(prep.weights[y0 : y0 + t, x0 : x0 + t])
        return (
            np.stack(images).astype(np.float32, copy=False),
            np.stack(targets).astype(np.int64),
            np.stack(weights).astype(np.float32, copy=False),
        )
