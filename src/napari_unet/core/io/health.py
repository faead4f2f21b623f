"""Is a loaded model one that computes, and is its metadata usable? Checked before any use.

A model file can hold the right architecture and still compute garbage: NaN or infinite
weights (a diverged training, a bit flip), weights so large that the forward pass overflows,
integer tensors where weights are floats, or a layer of zero weights that makes every pixel the
same.
Such a model would predict "0 cells" with exit status 0, score F1 0 without a word, or be
exported to bioimage.io with an all-NaN test output. :func:`check_model` refuses it: every
weight finite, then one forward pass on a small, fixed, random input must give finite logits,
and so finite, normalised probabilities, that are not the same for every pixel because of a
layer of zero weights. :func:`check_metadata`
refuses metadata that would fail later with a message about something else (a normalisation
that is not a mapping of percentiles, a stored post-processing threshold out of range read as
a bad ``--threshold`` the user never gave).

Both raise ``ValueError`` naming the file and saying it is broken, with the fix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["BROKEN_FIX", "broken", "check_metadata", "check_model"]

#: The fix every refusal of a broken model file ends with.
BROKEN_FIX = "the file is broken: copy or download it again, or train the model again"


def broken(source: Any, what: str) -> ValueError:
    """The refusal of a broken model file ``source``: ``"<source>: <what>; <BROKEN_FIX>"``.

    >>> print(broken("m.safetensors", "weight 'head.weight' holds NaN"))
    m.safetensors: weight 'head.weight' holds NaN; the file is broken: copy or download it again, or train the model again
    """
    return ValueError(f"{source}: {what}; {BROKEN_FIX}")


def check_model(model: torch.nn.Module, *, source: Any = "model") -> None:
    """Refuse a model that cannot compute: non-float or non-finite weights, a forward pass
    that gives non-finite output, or a layer of zero weights that makes it constant.

    The forward pass runs in eval mode on one input of the network's smallest valid size
    (a fixed random image, normalised like the training data), under ``torch.no_grad``, on
    the model's device; the model's mode is restored. A U-Net of the paper's size takes about
    0.1 s on a CPU.

    Parameters
    ----------
    model : UNet
        The network to check.
    source : any
        What to name in the message (the file's path).

    Raises
    ------
    ValueError
        ``"<source>: <what is wrong>; the file is broken: ..."``.

    Examples
    --------
    >>> from napari_unet.core.model import UNet
    >>> net = UNet(depth=1, base_channels=2)
    >>> check_model(net)
    >>> with torch.no_grad():
    ...     _ = net.head.weight.fill_(float("nan"))
    >>> check_model(net, source="m.safetensors")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: m.safetensors: 4 weight(s) of head.weight are NaN or infinite; the file is broken: ...
    """
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            continue  # counters such as BatchNorm's num_batches_tracked
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise broken(source, f"{bad} weight(s) of {name} are NaN or infinite")
    logits = _forward(model)
    if not bool(torch.isfinite(logits).all()):
        raise broken(source, "a forward pass on a small test image gives NaN or infinite "
                     "output (weights so large that the computation overflows)")
    spread = (logits.amax(dim=tuple(range(2, logits.ndim)))
              - logits.amin(dim=tuple(range(2, logits.ndim))))
    zero = [name for name, t in model.state_dict().items()
            if t.is_floating_point() and t.ndim > 1 and not bool(t.any())]
    if zero and not bool((spread > 0).any()):  # a tiny honest network may be constant too
        raise broken(source, f"all weights of {zero[0]} are zero: it gives the same output "
                     "for every pixel of a test image")
    prob = torch.softmax(logits.double(), dim=1)
    if not torch.allclose(prob.sum(dim=1), torch.ones_like(prob[:, 0]), atol=1e-6):
        raise broken(source, "its output probabilities do not sum to 1")  # pragma: no cover


def _forward(model) -> torch.Tensor:
    """The logits of ``model`` for a fixed random input of its smallest valid size."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    shape = tuple(model.valid_input_shape(1))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((1, model.in_channels, *shape), generator=gen)  # like a normalised image
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(x.to(device=device, dtype=dtype)).float().cpu()
    finally:
        model.train(was_training)


def check_metadata(meta: Mapping[str, Any], *, source: Any = "model") -> None:
    """Refuse metadata entries that would fail later with a message about something else.

    ``normalization`` must be a mapping whose ``low``/``high`` (when present) are numbers with
    ``0 <= low < high <= 100``; ``class_names`` a list of strings; ``postprocess`` and
    ``training`` mappings, and the stored post-processing valid
    (:class:`~napari_unet.core.predict.PostprocessSettings`).

    >>> check_metadata({"normalization": {"method": "percentile", "low": 1, "high": 99.8}})
    >>> check_metadata({"normalization": [1, 2]}, source="m.safetensors")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: m.safetensors: the stored normalization is [1, 2], not a mapping such as {'method': 'percentile', 'low': 1.0, 'high': 99.8}; ...
    """
    norm = meta.get("normalization")
    example = "{'method': 'percentile', 'low': 1.0, 'high': 99.8}"
    if norm is not None:
        if not isinstance(norm, Mapping):
            raise broken(source, f"the stored normalization is {_short(norm)}, not a mapping "
                         f"such as {example}")
        for key in ("low", "high"):
            value = norm.get(key, 1.0 if key == "low" else 99.8)
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not math.isfinite(value):
                raise broken(source, f"the stored normalization {key!r} is {_short(value)}, "
                             "not a number (a percentile, 0-100)")
        low, high = float(norm.get("low", 1.0)), float(norm.get("high", 99.8))
        if not 0 <= low < high <= 100:
            raise broken(source, f"the stored normalization percentiles are low {low:g}, "
                         f"high {high:g}; expected 0 <= low < high <= 100")
        from napari_unet.core.normalize import stored_normalization

        try:
            stored_normalization({"normalization": norm})
        except ValueError as err:  # an unknown method, a bad invert setting
            raise broken(source, f"the stored normalization is invalid ({err})") from None
    names = meta.get("class_names")
    if names is not None and (not isinstance(names, list)
                              or not all(isinstance(n, str) for n in names)):
        raise broken(source, f"the stored class_names are {_short(names)}, not a list of names")
    for key in ("postprocess", "training"):
        if meta.get(key) is not None and not isinstance(meta[key], Mapping):
            raise broken(source, f"the stored {key} entry is {_short(meta[key])}, not a mapping")
    if meta.get("postprocess"):
        from napari_unet.core.predict.postprocess import PostprocessSettings
        from napari_unet.core.predict.scales import stored_scales

        try:
            PostprocessSettings.from_metadata(meta)
            for colour in (False, True):
                stored_scales(meta, colour=colour)
        except (TypeError, ValueError) as err:
            raise broken(source, f"the stored post-processing is invalid ({err})") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
