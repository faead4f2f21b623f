"""A bioimage.io model package (format 0.5) of a napari-unet model.

The package holds:

- ``weights.pt``: the ``state_dict`` (``pytorch_state_dict`` weights) with the architecture as a
  source file, ``unet_model.py`` (napari-unet's ``model.py`` plus :class:`UNetProbabilities`), and
  the callable ``UNetProbabilities`` with the model's constructor arguments;
- ``weights_torchscript.pt`` (``torchscript``) and ``weights.onnx`` (``onnx``), converted from them;
- ``test_input.npy`` (raw image, axes batch, channel, y, x; a 3D model's: batch, channel, z, y, x)
  and ``test_output.npy`` (probabilities);
- ``cover.png`` (input | foreground probability), ``README.md`` (with a *Validation* section);
- the citation of Ronneberger, Fischer & Brox (2015), doi 10.1007/978-3-319-24574-4_28.

Inputs: ``scale_range`` pre-processing with the model's percentiles (``metadata["normalization"]``)
per sample and channel (axes y, x), exactly napari-unet's normalisation. Spatial sizes are
``min + n * 2**depth`` (``ParameterizedSize``). Outputs: soft-max probabilities are computed inside
the network (no post-processing), with ``padding="valid"`` smaller than the input by
``2 * margin`` per axis (a ``SizeReference`` with a negative offset).
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet import __distribution__, __version__
from napari_unet.core.io.bioimageio_files import (
    file_entry,
    spatial_axes,
    write_test_files,
    write_weights,
)
from napari_unet.core.io.model_file import default_class_names
from napari_unet.core.io.tensors import (
    normalized_test_input,
)
from napari_unet.core.model.unet import UNet
from napari_unet.core.normalize import (
    DEFAULT_NORMALIZATION,
    inverted_channels,
    normalized_median,
    stored_normalization,
)

__all__ = [
    "PAPER_CITATION",
    "WEIGHT_FORMATS",
    "build_rdf",
    "export_bioimageio",
    "preprocessing",
]

logger = logging.getLogger(__name__)

#: Weight formats a package can hold (the first one is the parent of the others).
WEIGHT_FORMATS = ("pytorch_state_dict", "torchscript", "onnx")

PAPER_CITATION = {
    "text": (
        "Ronneberger, O., Fischer, P., Brox, T. (2015). U-Net: Convolutional Networks for "
        "Biomedical Image Segmentation. MICCAI 2015, LNCS 9351, 234-241. arXiv:1505.04597"
    ),
    "doi": "10.1007/978-3-319-24574-4_28",
}

def _format_version() -> str:
    """The newest model format version the installed bioimageio.spec implements (0.5.x)."""
    try:
        from bioimageio.spec.model.v0_5 import ModelDescr
    except ImportError:
        return "0.5.4"
    return str(ModelDescr.implemented_format_version)


def _check_formats(weight_formats: Sequence[str]) -> None:
    bad = [f for f in weight_formats if f not in WEIGHT_FORMATS]
    if bad or "pytorch_state_dict" not in weight_formats:
        raise ValueError(
            f"weight_formats: expected a subset of {WEIGHT_FORMATS} containing "
            f"'pytorch_state_dict', got {tuple(weight_formats)!r}"
        )


def _axes(model: UNet, class_names: list[str]) -> tuple[list, list]:
    """Input axes (sizes ``min + n * step`` per axis, the step the axis's pooling grid) and
    output axes (input size − 2·margin of that axis); spatial axes y, x or z, y, x."""
    from napari_unet.core.predict.tiling import tile_alignment

    spatial = list(zip(spatial_axes(model), model.valid_input_shape(1), tile_alignment(model),
                       model.margins, strict=True))  # fmt: skip
    in_axes: list[dict[str, Any]] = [
        {"type": "batch"},
        {"type": "channel", "channel_names": [f"channel{i}" for i in range(model.in_channels)]},
    ] + [{"type": "space", "id": a, "size": {"min": s, "step": t}} for a, s, t, _m in spatial]
    out_axes: list[dict[str, Any]] = [
        {"type": "batch"},
        {"type": "channel", "channel_names": class_names},
    ] + [
        {"type": "space", "id": a, "size": {"tensor_id": "raw", "axis_id": a, "offset": -2 * m}}
        for a, _s, _t, m in spatial
    ]
    return in_axes, out_axes


def preprocessing(norm: dict | None, raw: np.ndarray | None = None,
                  axes=("y", "x")) -> list[dict[str, Any]]:
    """The bioimage.io preprocessing steps of a stored normalisation (``None``: none):
    ``scale_range`` over the percentiles, then ``scale_linear`` for the inverted channels.
    bioimage.io has no conditional step, so a polarity cut is fixed to what it decides for the
    test image ``raw`` (``(1, C, *spatial)``), with a warning.

    >>> [s["id"] for s in preprocessing({"low": 1.0, "high": 99.8, "invert": True})]
    ['scale_range', 'scale_linear']
    """
    if norm is None:
        return []
    kwargs = {"axes": list(axes), "min_percentile": norm["low"],
              "max_percentile": norm["high"], "eps": 1e-6}
    steps = [{"id": "scale_range", "kwargs": kwargs}]
    invert = norm.get("invert", False)
    if not invert:
        return steps
    flip = np.ones(1, bool)
    if invert is not True:  # a cut: bioimage.io has no conditional step, the test image decides
        med = normalized_median(raw[0], low=norm["low"], high=norm["high"], channel_axis=0)
        flip = inverted_channels(med, 0.0, 1.0, invert)
        logger.warning("bioimage.io export: normalization invert=%r is fixed to the "
                       "polarity of the test image (inverted: %s)", invert, flip.tolist())
    if flip.all():
        steps.append({"id": "scale_linear", "kwargs": {"gain": -1.0, "offset": 1.0}})
    elif flip.any():
        steps.append({"id": "scale_linear", "kwargs": {
            "axis": "channel", "gain": [-1.0 if f else 1.0 for f in flip],
            "offset": [1.0 if f else 0.0 for f in flip]}})
    return steps


def _config(model: UNet, metadata: dict, class_names: list[str]) -> dict[str, Any]:
    """napari-unet's own section: architecture, normalisation, post-processing, training."""
    from napari_unet.core.predict.postprocess import PostprocessSettings

    return {
        "napari_unet": {
            "architecture": dict(model.config),
            "normalization": metadata.get("normalization") or dict(DEFAULT_NORMALIZATION),
            "postprocess": PostprocessSettings.from_metadata(metadata).to_dict(),
            "class_names": class_names,
            "training": metadata.get("training") or {},
            "napari_unet_version": metadata.get("napari_unet_version", __version__),
        }
    }


def build_rdf(
    model: UNet,
    root: str | os.PathLike,
    *,
    metadata: Mapping[str, Any] | None = None,
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[str] | None = None,
    image: np.ndarray | None = None,
    weight_formats: Sequence[str] = WEIGHT_FORMATS,
    license: str = "BSD-3-Clause",
) -> dict[str, Any]:
    """Write the package's files into the folder ``root`` and return its ``rdf.yaml`` content.

    The returned dict (file sources relative to ``root``) is what
    :func:`bioimageio.spec.build_description` validates. See :func:`export_bioimageio`.
    The caller's model is left as it was (device and training mode): a CPU copy is exported.

    Examples
    --------
    >>> import tempfile
    >>> rdf = build_rdf(UNet(depth=1, base_channels=2), tempfile.mkdtemp(),
    ...                 weight_formats=("pytorch_state_dict",))
    >>> rdf["format_version"][:4], rdf["inputs"][0]["axes"][2]["size"]
    ('0.5.', {'min': 18, 'step': 2})
    """
    if not isinstance(model, UNet):
        raise TypeError(f"model: expected a napari_unet UNet, got {type(model).__name__}")
    _check_formats(weight_formats)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    metadata = dict(metadata or {})
    model = copy.deepcopy(model).cpu().eval()  # never the caller's model
    norm = stored_normalization(metadata)
    class_names = [str(c) for c in metadata.get("class_names") or []]
    if len(class_names) != model.num_classes:
        class_names = default_class_names(model.num_classes)
    name = name or f"napari-unet U-Net depth {model.depth} base {model.base_channels}"
    raw = write_test_files(model, root, metadata, image, name, norm)
    weights = write_weights(model, root, normalized_test_input(raw, metadata), weight_formats)
    inputs, outputs = _tensors(model, root, norm, raw, class_names)
    return {
        "format_version": _format_version(),
        "type": "model",
        "name": name,
        "description": description or _description(model, class_names),
        "authors": [{"name": a} for a in (authors or ["napari-unet user"])],
        "cite": [dict(PAPER_CITATION)],
        "license": license,
        "tags": ["unet", "segmentation", f"{model.ndim}d", "pytorch", __distribution__,
                 "instance-segmentation"],
        "documentation": file_entry(root, "README.md"),
        "covers": [file_entry(root, "cover.png")],
        "inputs": inputs,
        "outputs": outputs,
        "weights": weights,
        "config": _config(model, metadata, class_names),
    }


def _description(model: UNet, class_names: list[str]) -> str:
    margins = set(model.margins)
    margin_text = ("same size" if margins == {0} else f"{2 * margins.pop()} px smaller"
                   if len(margins) == 1 else f"{tuple(2 * m for m in model.margins)} px smaller")
    return (f"U-Net (Ronneberger et al. 2015) segmenting {', '.join(class_names)}; "
            f"outputs soft-max probabilities, {margin_text} than the input. Made with "
            f"{__distribution__}.")


def _tensors(model: UNet, root: Path, norm, raw, class_names) -> tuple[list, list]:
    """The ``inputs`` and ``outputs`` of the description: axes, test and sample tensors."""
    in_axes, out_axes = _axes(model, class_names)
    inputs = [{
        "id": "raw",
        "description": "image; normalised by the pre-processing",
        "axes": in_axes,
        "test_tensor": file_entry(root, "test_input.npy"),
        "sample_tensor": file_entry(root, "sample_input.tif"),
        "data": {"type": "float32"},
        "preprocessing": preprocessing(norm, raw, spatial_axes(model)),
    }]
    outputs = [{
        "id": "probabilities",
        "description": "soft-max probability of each class",
        "axes": out_axes,
        "test_tensor": file_entry(root, "test_output.npy"),
        "sample_tensor": file_entry(root, "sample_output.tif"),
        "data": {"type": "float32", "range": [0.0, 1.0]},
    }]
    return inputs, outputs


def export_bioimageio(
    model: UNet,
    out: str | os.PathLike,
    *,
    metadata: Mapping[str, Any] | None = None,
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[str] | None = None,
    image: np.ndarray | None = None,
    weight_formats: Sequence[str] = WEIGHT_FORMATS,
) -> Path:
    """Write a validated bioimage.io model package (a ``.zip`` file or a folder).

    Parameters
    ----------
    model : UNet
    out : path
        ``*.zip``: a zipped package; anything else: a folder (created) holding ``rdf.yaml``.
    metadata : mapping, optional
        The model's metadata (``normalization``, ``class_names``, ``history``, ...).
    name, description : str, optional
        Shown on bioimage.io; ``name`` may hold letters, digits, spaces and ``_+-()``.
    authors : sequence of str, optional
        Names of the people who trained the model.
    image : ndarray, optional
        Test image ``(H, W)`` or ``(C, H, W)`` (raw); default: synthetic touching cells.
    weight_formats : sequence of str
        Subset of :data:`WEIGHT_FORMATS`; ``pytorch_state_dict`` is always included.

    Returns
    -------
    Path of the zip file or of the folder.

    Raises
    ------
    ValueError
        The description does not validate (the message holds bioimage.io's reasons).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = export_bioimageio(UNet(depth=1, base_channels=2),
    ...                       pathlib.Path(tempfile.mkdtemp()) / "unet.zip",
    ...                       weight_formats=("pytorch_state_dict",))
    >>> p.suffix
    '.zip'
    """
    try:
        from bioimageio.spec import (
            InvalidDescr,
            ValidationContext,
            build_description,
            save_bioimageio_package,
            save_bioimageio_package_as_folder,
        )
    except ImportError:
        raise ImportError(
            "exporting to bioimage.io needs the package 'bioimageio.spec': "
            f"pip install '{__distribution__}[export]'"
        ) from None

    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="napari-unet-bioimageio-") as tmp:
        stage = Path(tmp)
        rdf = build_rdf(
            model,
            stage,
            metadata=metadata,
            name=name,
            description=description,
            authors=authors,
            image=image,
            weight_formats=weight_formats,
        )
        with ValidationContext(root=stage, perform_io_checks=True):
            descr = build_description(rdf)
        if isinstance(descr, InvalidDescr):
            raise ValueError(
                "the bioimage.io description does not validate:\n"
                + descr.validation_summary.format()
            )
        if out.suffix.lower() == ".zip":
            out.parent.mkdir(parents=True, exist_ok=True)
            if out.exists():
                out.unlink()
            save_bioimageio_package(descr, output_path=out)
        else:
            if out.exists() and any(out.iterdir()):
                raise FileExistsError(
                    f"out: folder {str(out)!r} exists and is not empty; choose a new folder or "
                    "a .zip file"
                )
            out.mkdir(parents=True, exist_ok=True)
            save_bioimageio_package_as_folder(descr, output_path=out)
    logger.info("wrote bioimage.io package to %s", out)
    return out
