"""Intensity normalisation: the one mapping of raw images to the network's input range,
stored with every model so that training and prediction normalise alike.

Normalisation is robust and per image: each channel is mapped so that its ``low`` and ``high``
percentiles become 0 and 1. The settings are stored in the model's metadata so that prediction
normalises the same way. ``invert`` makes the polarity consistent: a cut ``c`` in [0, 1] turns
a channel whose normalised median lies above ``c`` — a bright background (brightfield, H&E
converted to gray: dark nuclei) — into bright objects on a dark background, like fluorescence
(:func:`inverted_channels`). New gray models store the cut :func:`polarity_cut` chose from
their training images, as far as possible from all of them (so that images like the training
ones never flip one way or the other by chance); ``"auto"`` (earlier models) is the cut 0.5;
metadata without the key (older models) never inverts.

A colour image given to a one-channel model is first turned into one channel by the rule the
model stores (``normalization["colour"]``, :func:`to_gray`): the channel mean, or the
hematoxylin stain of a brightfield image (H&E, IHC), where nuclei are the stained objects.
"""

from __future__ import annotations

import numpy as np

from napari_unet.core.checks import check_finite

__all__ = [
    "BRIGHTFIELD_CUT",
    "COLOUR_RULES",
    "DEFAULT_COLOUR_RULE",
    "DEFAULT_NORMALIZATION",
    "apply_range",
    "as_model_channels",
    "channel_range",
    "inverted_channels",
    "normalize",
    "normalized_median",
    "polarity_cut",
    "stored_colour_rule",
    "stored_normalization",
    "to_gray",
]

#: Normalisation stored with every model unless the user chooses otherwise.
DEFAULT_NORMALIZATION: dict = {"method": "percentile", "low": 1.0, "high": 99.8}

#: How a one-channel model sees a colour image (:func:`to_gray`): "mean" of the colour
#: channels; "stain", the hematoxylin optical density of a colour deconvolution (Ruifrok &
#: Johnston 2001); "auto", "stain" for a brightfield image (bright background) and "mean"
#: otherwise (e.g. a fluorescence composite).
COLOUR_RULES = ("auto", "mean", "stain")
#: The default is the mean: a 14,000-step DSB model trained and applied with "stain" on its
#: colour images scored F1@0.5 0.593 on 63 colour images none had seen (one pass; 0.603 with
#: the flips), the same model with "mean" 0.597 (0.638): the stain separates nucleus pixels
#: better, yet the network does not split packed H&E nuclei any better with it.
DEFAULT_COLOUR_RULE = "mean"


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
    if isinstance(invert, float | int) and not isinstance(invert, bool) and 0 <= invert <= 1:
        return float(invert)
    raise ValueError(f"{name}: expected False, True, 'auto' or a cut in [0, 1], got {invert!r}")


def _cut(invert) -> float | None:
    """The median cut of an ``invert`` setting ("auto": 0.5); None for True / False."""
    if invert == "auto":
        return 0.5
    return None if isinstance(invert, bool) else float(invert)


def inverted_channels(median, lo, hi, invert=False) -> np.ndarray:
    """Which channels :func:`normalize` inverts: all (``invert=True``), none (False), or, with a
    cut ``c`` in [0, 1], those whose median lies above ``lo + c * (hi - lo)`` of their
    ``[lo, hi]`` percentile range (a bright background); ``"auto"`` is the cut 0.5. On the 100
    DSB2018 images (gray-converted) the normalised median is 0.60-0.94 for all 18 with nuclei
    darker than the background (16 colour, 2 gray brightfield) and at most 0.09 for the 82
    fluorescence images; on the ISBI 2012 EM slices it is 0.49-0.55, which is why the cut is
    chosen from the training images (:func:`polarity_cut`) rather than fixed at 0.5.

    >>> inverted_channels(np.array([200.0, 10.0]), 0.0, 255.0, "auto").tolist()
    [True, False]
    >>> inverted_channels(np.array([0.5, 0.2]), 0.0, 1.0, 0.25).tolist()
    [True, False]
    """
    invert = _check_invert(invert)
    median, lo, hi = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (median, lo, hi)))
    cut = _cut(invert)
    if cut is not None:
        return median > lo + cut * (hi - lo)
    return np.full(median.shape, bool(invert))


def normalized_median(image: np.ndarray, *, low: float = 1.0, high: float = 99.8,
                      channel_axis: int | None = None, max_pixels: int = 2**22) -> np.ndarray:
    """Per channel, the median mapped by the ``low``/``high`` percentiles to [0, 1], from a
    strided subsample of at most ``max_pixels`` per channel (a 1-element array without
    ``channel_axis``).

    >>> normalized_median(np.arange(101.0), low=0, high=100).tolist()
    [0.5]
    """
    x = np.moveaxis(np.asarray(image, np.float32), channel_axis, 0) \
        if channel_axis is not None else np.asarray(image, np.float32)[None]
    step = max(1, int(np.ceil(x[0].size / max_pixels)))
    flat = x.reshape(x.shape[0], -1)[:, ::step]
    lo, med, hi = np.percentile(flat, [low, 50, high], axis=1)
    return np.clip((med - lo) / np.maximum(hi - lo, 1e-12), 0.0, 1.0)


def polarity_cut(medians) -> float:
    """The polarity cut for images with these normalised medians: the middle of the widest
    interval of [0, 1] that holds none of them, so that every training image lies as far from
    the cut as it can (a maximum-margin split). Fluorescence and brightfield images mixed (DSB:
    at most 0.09 and at least 0.60) are split between the two groups; images of one kind get a
    cut far from all of them — on one side (EM slices at 0.49–0.55: none flips by chance), and
    an image of the other kind at prediction is still turned the training images' way.

    >>> polarity_cut([0.05, 0.09, 0.6, 0.94])
    0.345
    >>> polarity_cut([0.486, 0.5, 0.545])  # ISBI 2012-like: all on one side of the cut
    0.243
    >>> polarity_cut([0.02, 0.08])  # fluorescence only: a brightfield image would flip
    0.54
    """
    m = np.sort(np.clip(np.asarray(medians, np.float64).ravel(), 0.0, 1.0))
    if m.size == 0:
        return 0.5
    edges = np.concatenate([[0.0], m, [1.0]])
    k = int(np.argmax(np.diff(edges)))
    return round(float(edges[k] + edges[k + 1]) / 2, 3)


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
    invert : bool, float or "auto"
        Map ``high`` to 0 and ``low`` to 1 instead (``(hi - x) / (hi - lo + eps)``): True for
        every channel; a cut in [0, 1] for channels with a bright background
        (:func:`inverted_channels`: median above that fraction of the range; ``"auto"``: 0.5).

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
    x = image.astype(np.float32, copy=False)
    lo, hi, flip = channel_range(x, low=low, high=high, channel_axis=channel_axis, invert=invert)
    return apply_range(x, lo, hi, flip, eps=eps)


def channel_range(x: np.ndarray, *, low: float = 1.0, high: float = 99.8,
                  channel_axis: int | None = None, invert: bool | str = False):
    """``(lo, hi, flip)`` that :func:`normalize` maps ``x`` with: the ``low``/``high``
    percentiles per channel (kept dimensions, so they broadcast against ``x``) and which
    channels are inverted (None: none). Block-wise prediction computes them once on a
    subsample and applies them block by block (:func:`apply_range`).

    >>> lo, hi, flip = channel_range(np.arange(11.0), low=0, high=100)
    >>> float(lo), float(hi), flip
    (0.0, 10.0, None)
    """
    invert = _check_invert(invert)
    other = None if channel_axis is None else tuple(
        a for a in range(x.ndim) if a != channel_axis % x.ndim)
    lo, hi = np.percentile(x, [low, high], axis=other, keepdims=other is not None)
    if not invert:
        return lo, hi, None
    median = np.median(x, axis=other, keepdims=other is not None) if _cut(invert) is not None \
        else lo
    return lo, hi, inverted_channels(median, lo, hi, invert)


def apply_range(x: np.ndarray, lo, hi, flip=None, *, eps: float = 1e-6) -> np.ndarray:
    """``(x - lo) / (hi - lo + eps)``, or ``(hi - x) / (hi - lo + eps)`` for the channels
    ``flip`` inverts, as float32: the mapping of :func:`normalize`.

    >>> apply_range(np.array([0.0, 5.0, 10.0]), 0.0, 10.0, eps=0.0).tolist()
    [0.0, 0.5, 1.0]
    """
    if flip is None:
        return ((x - lo) / (hi - lo + eps)).astype(np.float32)
    return np.where(flip, (hi - x) / (hi - lo + eps), (x - lo) / (hi - lo + eps)).astype(
        np.float32)


def stored_colour_rule(metadata: dict | None) -> str:
    """The rule a one-channel model turns colour images into gray by
    (``metadata["normalization"]["colour"]``); "mean" for models that store none (what the
    command line's ``--gray`` did before models stored a rule).

    >>> stored_colour_rule(None), stored_colour_rule({"normalization": {"colour": "auto"}})
    ('mean', 'auto')
    """
    rule = ((metadata or {}).get("normalization") or {}).get("colour", "mean")
    if rule not in COLOUR_RULES:
        raise ValueError(
            f"metadata['normalization']['colour']: expected one of {', '.join(COLOUR_RULES)}, "
            f"got {rule!r} (was the model file written by another tool?)"
        )
    return rule


#: A colour image is brightfield (H&E, IHC: stained objects on a white background) for the
#: "auto" rule when the median of its channel mean exceeds this fraction of the value range
#: (the dtype's maximum, or 1 / the brightest value for floats). Over DSB 2018's 564 images:
#: at least 0.52 for every colour (brightfield) image, gray brightfield 0.89, at most 0.17
#: for fluorescence; the cut lies between.
BRIGHTFIELD_CUT = 0.35


def _value_range(a: np.ndarray) -> float:
    if np.issubdtype(a.dtype, np.integer):
        return float(np.iinfo(a.dtype).max)
    return max(1.0, float(np.max(a)))  # floats: [0, 1], or up to the brightest value


def to_gray(image: np.ndarray, *, channel_axis: int = -1, rule: str = DEFAULT_COLOUR_RULE
            ) -> np.ndarray:
    """One channel from a colour image (RGB, or RGBA whose alpha is dropped), as a one-channel
    model sees it.

    Parameters
    ----------
    image : ndarray
        Colour image with 3 or 4 channels along ``channel_axis``; any real dtype.
    channel_axis : int
        Axis of the colour channels.
    rule : {"auto", "mean", "stain"}
        "mean": the mean of R, G and B. "stain": the hematoxylin optical density of
        :func:`skimage.color.rgb2hed` (nuclei bright on a dark background, as in
        fluorescence), for brightfield H&E or IHC. "auto": "stain" for a brightfield image
        (the median of its channel mean above :data:`BRIGHTFIELD_CUT` of the value range),
        else "mean". On the H&E images of DSB 2018's training part, the
        hematoxylin channel separates nucleus pixels from the rest with a per-image ROC AUC of
        at least 0.94, the channel mean down to 0.62 (pink cytoplasm is as dark as the nuclei
        in gray).

    Returns
    -------
    float32 ndarray without the channel axis.

    Examples
    --------
    >>> rgb = np.full((4, 4, 3), 230, np.uint8); rgb[1, 1] = (80, 40, 150)  # a purple nucleus
    >>> gray = to_gray(rgb, rule="stain")
    >>> gray.dtype, gray.shape, bool(gray[1, 1] > gray[0, 0])
    (dtype('float32'), (4, 4), True)
    >>> float(to_gray(rgb, rule="mean")[0, 0])
    230.0
    """
    if rule not in COLOUR_RULES:
        raise ValueError(f"rule: expected one of {', '.join(COLOUR_RULES)}, got {rule!r}")
    a = np.moveaxis(np.asarray(image), channel_axis, -1)
    if a.ndim < 3 or a.shape[-1] not in (3, 4):
        raise ValueError(
            f"image: expected 3 or 4 colour channels along axis {channel_axis}, got shape "
            f"{np.asarray(image).shape}; give the axis of the colour channels as channel_axis"
        )
    rgb = a[..., :3]
    mean = rgb.astype(np.float32).mean(axis=-1)
    scale = _value_range(rgb)
    if rule == "mean" or (rule == "auto" and np.median(mean) <= BRIGHTFIELD_CUT * scale):
        return mean
    from skimage.color import rgb2hed

    return rgb2hed(rgb.astype(np.float32) / scale)[..., 0].astype(np.float32)


def as_model_channels(image: np.ndarray, *, channel_axis: int | None, in_channels: int,
                      metadata: dict | None = None) -> tuple[np.ndarray, int | None]:
    """``(image, channel_axis)`` as a model with ``in_channels`` inputs takes it: a colour
    image (3 or 4 channels) for a one-channel model becomes gray by the model's stored rule
    (:func:`stored_colour_rule`, :func:`to_gray`); anything else is returned as it is.

    >>> rgb = np.zeros((4, 5, 3), np.uint8)
    >>> gray, axis = as_model_channels(rgb, channel_axis=-1, in_channels=1)
    >>> gray.shape, axis
    ((4, 5), None)
    """
    if channel_axis is None or in_channels != 1:
        return image, channel_axis
    if np.asarray(image).shape[channel_axis] not in (3, 4):
        return image, channel_axis
    return to_gray(image, channel_axis=channel_axis, rule=stored_colour_rule(metadata)), None
