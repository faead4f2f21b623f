"""Export to the exchange formats: TorchScript, ONNX (:mod:`.tensors`) and bioimage.io
packages (:mod:`.bioimageio`, built on :mod:`.tensors`); :func:`export_model` writes any of them.

Dependencies run one way: ``export`` → ``bioimageio`` → ``tensors`` → ``core.model`` /
``core.normalize``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from napari_unet.core.io.tensors import export_onnx, export_torchscript
from napari_unet.core.model.unet import UNet

__all__ = ["EXPORT_FORMATS", "export_model"]

#: Formats understood by :func:`export_model` (and ``napari-unet export --format``).
EXPORT_FORMATS = ("bioimageio", "torchscript", "onnx")


def export_model(
    model: UNet | str | os.PathLike,
    out: str | os.PathLike,
    *,
    format: str,
    metadata: Mapping[str, Any] | None = None,
    **options: Any,
) -> Path:
    """Export a model (or a napari-unet model file) to ``format``.

    Parameters
    ----------
    model : UNet or path
        A network, or a ``.safetensors`` file written by :func:`napari_unet.core.io.save_model`
        (its metadata is then used unless ``metadata`` is given).
    out : path
        ``torchscript``: a file (``.pt``); ``onnx``: a file (``.onnx``); ``bioimageio``: a folder,
        or a ``.zip`` file.
    format : {"bioimageio", "torchscript", "onnx"}
    metadata : mapping, optional
        The model's metadata (``normalization``, ``class_names``, ...).
    **options
        Passed on to :func:`napari_unet.core.io.bioimageio.export_bioimageio` (``name``,
        ``authors``, ``image``, ...) for ``bioimageio``.

    Returns
    -------
    Path of what was written.

    Raises
    ------
    ValueError
        A model whose weights or output are not finite (:mod:`napari_unet.core.io.health`):
        nothing is written.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> export_model(UNet(depth=1, base_channels=2), d / "m.onnx", format="onnx").name
    'm.onnx'
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format: expected one of {EXPORT_FORMATS}, got {format!r}")
    if not isinstance(model, UNet):
        from napari_unet.core.io.model_file import load_model

        model, file_meta = load_model(model)  # checked as it loads
        metadata = file_meta if metadata is None else metadata
    else:  # never publish a model that computes garbage
        from napari_unet.core.io.health import check_model

        check_model(model)
    if format != "bioimageio" and options:
        raise TypeError(f"options {sorted(options)} are only understood by format 'bioimageio'")
    if format == "torchscript":
        return export_torchscript(model, out)
    if format == "onnx":
        return export_onnx(model, out)
    from napari_unet.core.io.bioimageio import export_bioimageio

    return export_bioimageio(model, out, metadata=metadata, **options)
