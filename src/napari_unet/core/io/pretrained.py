"""Load pretrained weights for fine-tuning without ever running code from the file.

Two kinds of file are accepted:

- ``.safetensors``: napari-unet's own model files (:func:`napari_unet.core.io.load_model`, which
  never unpickles) or a bare safetensors ``state_dict``;
- ``.pt`` / ``.pth``: a plain PyTorch checkpoint read with ``torch.load(weights_only=True)``, whose
  restricted unpickler only rebuilds tensors and plain containers (dict, list, str, numbers).

A pickle that holds anything else — a whole ``nn.Module``, a custom class, or a crafted payload
calling ``os.system`` — is refused with a ``ValueError`` that names the file and tells how to save
a plain ``state_dict`` instead; its payload never runs. Truncated or corrupted files, TorchScript
archives and other suffixes give a ``ValueError`` naming the file, too.

The weights are mapped onto :class:`~napari_unet.core.model.UNet`: ``depth``, ``base_channels``,
``in_channels`` and ``num_classes`` are inferred from the tensor shapes (``padding`` and
``dropout`` leave no trace in the weights: they come from a ``"config"`` / ``"architecture"`` dict
stored beside the weights, or from the caller, default ``"valid"``/0.5).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from napari_unet.core.io.health import check_model
from napari_unet.core.model.unet import UNet
from napari_unet.core.normalize import DEFAULT_NORMALIZATION

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "infer_unet_config",
    "load_pretrained",
    "read_state_dict",
    "unet_from_state_dict",
]

logger = logging.getLogger(__name__)

#: Suffixes of plain PyTorch checkpoints (read with ``torch.load(weights_only=True)``).
CHECKPOINT_SUFFIXES = (".pt", ".pth")
_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")
_CONFIG_KEYS = ("architecture", "config", "model_config", "hyper_parameters")
_PREFIXES = ("module.", "_orig_mod.", "model.", "net.")
_UNET_ARGS = ("in_channels", "num_classes", "depth", "base_channels", "padding", "dropout")
_FIX = (
    "save only the weights where the model was made: "
    "torch.save(model.state_dict(), 'weights.pt') (or safetensors.torch.save_file)"
)


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"the Python object {found.group(1)!r}" if found else "Python objects"
        raise ValueError(
            f"{path}: refused to load: the file holds {what}, not only tensors, and unpickling "
            f"it could run arbitrary code. Only plain state dicts are loaded; {_FIX}"
        ) from None
    except RuntimeError as err:
        if "TorchScript" in str(err):
            raise ValueError(
                f"{path}: this is a TorchScript archive, not a plain checkpoint; {_FIX}"
            ) from None
        raise ValueError(
            f"{path}: corrupted or truncated PyTorch file ({str(err).splitlines()[0]}); "
            "copy or download it again"
        ) from None
    except (
        EOFError, KeyError, ValueError, IndexError, TypeError, AttributeError, OSError,
        struct.error, zipfile.BadZipFile,
    ) as err:
        raise ValueError(
            f"{path}: not a readable PyTorch checkpoint (empty, truncated or corrupted: "
            f"{type(err).__name__} {err}); copy or download it again"
        ) from None


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _find_state_dict(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The tensors and an optional config dict from a loaded checkpoint object."""
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{path}: expected a dict of tensors (a state_dict), got a {type(obj).__name__}; {_FIX}"
        )
    config = None
    for key in _CONFIG_KEYS:
        if isinstance(obj.get(key), Mapping):
            config = {k: v for k, v in obj[key].items() if k in _UNET_ARGS}
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        for key in _STATE_KEYS:
            if isinstance(obj.get(key), Mapping):
                tensors = {k: v for k, v in obj[key].items() if isinstance(v, torch.Tensor)}
                break
    if not tensors:
        raise ValueError(
            f"{path}: no tensors found (top-level keys: {sorted(map(str, obj))[:8]}); expected a "
            f"state_dict, possibly under one of {_STATE_KEYS}"
        )
    return _strip_prefixes({str(k): v for k, v in tensors.items()}), config


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Read the tensors of a checkpoint safely; returns ``(state_dict, config or None)``.

    Parameters
    ----------
    path : str or PathLike
        ``.pt`` / ``.pth`` (plain PyTorch checkpoint) or ``.safetensors``.

    Returns
    -------
    state_dict : dict of str to Tensor
        On the CPU; prefixes ``module.`` (DistributedDataParallel), ``_orig_mod.``
        (``torch.compile``), ``model.`` and ``net.`` removed.
    config : dict or None
        U-Net constructor arguments found beside the weights (napari-unet's ``architecture``
        metadata, or a ``config`` dict in a checkpoint).

    Raises
    ------
    ValueError
        Any file that is not a plain, intact checkpoint; the message names the file and the fix.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
    >>> torch.save({"state_dict": UNet(depth=1, base_channels=2).state_dict()}, p)
    >>> state, config = read_state_dict(p)
    >>> tuple(state["head.weight"].shape), config
    ((2, 2, 1, 1), None)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from napari_unet.core.io.model_file import read_metadata

        meta = read_metadata(path)  # checks the header: ValueError if truncated or corrupted
        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, RuntimeError) as err:
            raise ValueError(f"{path}: corrupted safetensors file ({err})") from None
        arch = meta.get("architecture")
        return _strip_prefixes(state), dict(arch) if isinstance(arch, Mapping) else None
    if suffix not in CHECKPOINT_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported weights file {suffix or '(no suffix)'!r}; expected a napari-unet "
            f"model (.safetensors) or a plain PyTorch state dict ({', '.join(CHECKPOINT_SUFFIXES)})"
            f". To convert: {_FIX}"
        )
    return _find_state_dict(_torch_load(path), path)


def infer_unet_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """``in_channels``, ``num_classes``, ``depth`` and ``base_channels`` from weight shapes.

    Examples
    --------
    >>> infer_unet_config(UNet(in_channels=3, num_classes=3, depth=2, base_channels=8).state_dict())
    {'in_channels': 3, 'num_classes': 3, 'depth': 2, 'base_channels': 8}
    """
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r"down\.(\d+)\.0\.weight$", k))}
    first, head = state_dict.get("down.0.0.weight"), state_dict.get("head.weight")
    if first is None and "bottom.0.weight" in state_dict:  # depth 0: no contracting block
        first = state_dict["bottom.0.weight"]
    if first is None or head is None or first.ndim != 4 or head.ndim != 4:
        sample = ", ".join(sorted(state_dict)[:5])
        raise ValueError(
            "state_dict: expected the weights of a napari-unet U-Net (keys like "
            f"'down.0.0.weight', 'head.weight'), got keys {sample}, ...; the checkpoint belongs "
            "to another architecture"
        )
    depth = len(blocks)
    if blocks != set(range(depth)):
        raise ValueError(f"state_dict: contracting blocks {sorted(blocks)} are not 0..{depth - 1}")
    return {
        "in_channels": int(first.shape[1]),
        "num_classes": int(head.shape[0]),
        "depth": depth,
        "base_channels": int(head.shape[1]),
    }


def unet_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    config: Mapping[str, Any] | None = None,
    padding: str | None = None,
    dropout: float | None = None,
    source: str = "state_dict",
) -> UNet:
    """Build a U-Net whose shape fits ``state_dict`` and load the weights (strictly).

    ``config`` (e.g. from :func:`read_state_dict`) gives ``padding`` and ``dropout``; explicit
    ``padding`` / ``dropout`` arguments win. ``source`` names the weights in error messages.

    Examples
    --------
    >>> net = unet_from_state_dict(UNet(depth=1, base_channels=2).state_dict(), padding="same")
    >>> net.depth, net.padding
    (1, 'same')
    """
    inferred = infer_unet_config(state_dict)
    args: dict[str, Any] = {"padding": "valid", "dropout": 0.5}
    args.update({k: v for k, v in (config or {}).items() if k in _UNET_ARGS})
    for key, value in inferred.items():
        if key in args and args[key] != value:
            logger.warning("%s: %s=%r in the config, %r in the weights; using the weights",
                           source, key, args[key], value)
    args.update(inferred)
    if padding is not None:
        args["padding"] = padding
    if dropout is not None:
        args["dropout"] = dropout
    model = UNet(**args)
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
        raise ValueError(
            f"{source}: the weights do not fit a U-Net {args} ({' '.join(lines[1:3]) or lines[0]})"
        ) from None
    return model


def load_pretrained(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    padding: str | None = None,
    dropout: float | None = None,
) -> tuple[UNet, dict[str, Any]]:
    """Load a model to fine-tune from a napari-unet file or a plain PyTorch checkpoint.

    Parameters
    ----------
    path : str or PathLike
        ``.safetensors`` (napari-unet's format or a bare state dict) or ``.pt`` / ``.pth``.
    device : str or torch.device
    padding, dropout : optional
        Override what the file says (or the defaults ``"valid"``, 0.5 for bare weights).

    Returns
    -------
    (UNet in eval mode, metadata)
        For napari-unet files the stored metadata; otherwise ``architecture``,
        ``normalization`` (the default) and ``source``.

    Raises
    ------
    ValueError
        An unreadable file, weights that fit no U-Net, or a model that computes garbage
        (:func:`napari_unet.core.io.health.check_model`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.pth"
    >>> torch.save(UNet(depth=2, base_channels=4).state_dict(), p)
    >>> model, meta = load_pretrained(p)
    >>> meta["architecture"]["depth"], meta["architecture"]["base_channels"]
    (2, 4)
    """
    path = Path(path)
    meta: dict[str, Any] = {"normalization": dict(DEFAULT_NORMALIZATION)}
    if path.suffix.lower() == ".safetensors" and path.is_file():
        from napari_unet.core.io.model_file import load_model, read_metadata

        stored = read_metadata(path)
        if isinstance(stored.get("architecture"), Mapping):
            if padding is None and dropout is None:
                return load_model(path, device=device)
            meta.update(stored)
    state, config = read_state_dict(path)
    model = unet_from_state_dict(
        state, config=config, padding=padding, dropout=dropout, source=str(path)
    )
    meta.update({"architecture": dict(model.config), "source": str(path)})
    logger.info("loaded %s as a U-Net %s", path, model.config)
    model = model.to(device).eval()
    check_model(model, source=path)  # NaN weights or an overflowing network: a broken file
    return model, meta
