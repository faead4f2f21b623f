"""The files of a bioimage.io package beside its description
(:mod:`napari_unet.core.io.bioimageio`): the weights in every format with the architecture's
source, the test and sample tensors, the cover image and the README."""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import napari_unet.core.model.shapes as shapes_module
import napari_unet.core.model.unet as unet_module
from napari_unet import __distribution__, __version__
from napari_unet.core.io.model_file import default_class_names
from napari_unet.core.io.tensors import (
    ONNX_OPSET,
    UNetProbabilities,
    export_onnx,
    export_torchscript,
    make_test_input,
    reference_output,
)
from napari_unet.core.model.unet import UNet
from napari_unet.core.predict.tiling import tile_alignment

__all__ = ["ARCH_FILE", "architecture_source", "cover", "file_entry", "readme", "sha256",
           "spatial_axes", "write_test_files", "write_weights"]


def cover(raw: np.ndarray, prob: np.ndarray, margin: int = 0) -> np.ndarray:
    """uint8 image: the input (cropped to the output's field) beside the foreground probability
    (the middle slice of a volume)."""
    img = raw[0, 0]
    if img.ndim == 3:
        img, prob = img[img.shape[0] // 2], prob[:, :, prob.shape[2] // 2]
    h, w = prob.shape[-2:]
    top, left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    img = img[top : top + h, left : left + w]
    lo, hi = np.percentile(img, [1, 99.8])
    img = np.clip((img - lo) / (hi - lo + 1e-6), 0, 1)
    fg = prob[0, 1] if prob.shape[1] == 2 else 1.0 - prob[0, 0]
    pair = np.concatenate([img, np.clip(fg, 0, 1)], axis=1)
    zoom = max(1, int(np.ceil(256 / h)))
    pair = np.repeat(np.repeat(pair, zoom, axis=0), zoom, axis=1)
    return (pair * 255).round().astype(np.uint8)


def spatial_axes(model: UNet) -> tuple[str, ...]:
    """The model's spatial axis letters, ``('y', 'x')`` or ``('z', 'y', 'x')``."""
    return tuple("zyx"[-model.ndim :])


def readme(model: UNet, metadata: Mapping[str, Any], name: str, norm: dict | None) -> str:
    """The package's README.md: what the model is, its input sizes and margins, its normalisation."""
    axes = ", ".join(spatial_axes(model))
    sizes = "; ".join(f"{a}: {s} + n * {t}" for a, s, t in
                      zip(spatial_axes(model), model.valid_input_shape(1), tile_alignment(model),
                          strict=True))  # fmt: skip
    shrink = ", ".join(f"{a}: {2 * m}" for a, m in zip(spatial_axes(model), model.margins,
                                                         strict=True))
    history = [h for h in metadata.get("history") or [] if isinstance(h, dict)]
    metrics = [h for h in history if h.get("metrics")]
    if metrics:
        last = metrics[-1]
        validation = (
            f"Metrics on the held-out validation tiles at step {last.get('step', '?')} of training "
            f"(napari-unet):\n\n```\n{json.dumps(last['metrics'], indent=2, default=str)}\n```\n"
        )
    else:
        validation = (
            "No held-out metrics are stored with this model. Validate it on annotated images of "
            "your own with `napari-unet evaluate --model MODEL --images ... --labels ...`.\n"
        )
    norm_text = (
        f"each channel's {norm['low']} and {norm['high']} percentiles mapped to 0 and 1 "
        "(`scale_range`, per sample)"
        if norm
        else "none (the model takes the raw values)"
    )
    return f"""# {name}

A U-Net (Ronneberger, Fischer & Brox, 2015) trained with
{__distribution__} {metadata.get("napari_unet_version", __version__)} (`pip install {__distribution__}`).

- Architecture: {json.dumps(model.config)}
- Input: {model.in_channels} channel(s), axes (batch, channel, {axes}), float32; normalisation:
  {norm_text}.
- Valid spatial input sizes: {sizes} pixels.
- Output: per-class probabilities (soft-max inside the network) for the classes
  {", ".join(metadata.get("class_names") or default_class_names(model.num_classes))};
  {"smaller than the input by (" + shrink + ") pixels (unpadded convolutions)"
   if model.padding == "valid" else "same size as the input"}.
  For images larger than one tile use the overlap-tile strategy of the paper: tile the mirrored
  image so that the output tiles abut.

## Validation

{validation}
"""


def write_test_files(model: UNet, root: Path, metadata: dict, image, name: str, norm) -> np.ndarray:
    """Test/sample tensors, cover and README; returns the raw test input."""
    import imageio.v3 as iio
    import tifffile

    raw = make_test_input(model, image=image)
    prob = reference_output(model, raw, metadata)
    np.save(root / "test_input.npy", raw)
    np.save(root / "test_output.npy", prob)
    tifffile.imwrite(root / "sample_input.tif", raw[0], photometric="minisblack")
    tifffile.imwrite(root / "sample_output.tif", prob[0], photometric="minisblack")
    iio.imwrite(root / "cover.png", cover(raw, prob))
    (root / "README.md").write_text(readme(model, metadata, name, norm), encoding="utf-8")
    return raw


ARCH_FILE = "unet_model.py"


def sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(root: Path, name: str) -> dict[str, str]:
    """A bioimage.io file reference: the name inside the package and its SHA-256."""
    return {"source": name, "sha256": sha256(root / name)}


def architecture_source() -> str:
    """A self-contained Python file: napari-unet's model shapes and network
    (:mod:`napari_unet.core.model.shapes`, :mod:`napari_unet.core.model.unet`, without the
    import of the one by the other) plus UNetProbabilities."""
    network = ast.parse(inspect.getsource(unet_module))
    drop = {i for node in network.body if isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith(("napari_unet", "__future__"))
            for i in range(node.lineno, node.end_lineno + 1)}
    lines = inspect.getsource(unet_module).splitlines(keepends=True)
    return (
        inspect.getsource(shapes_module)
        + "\n\n# --- the network (napari_unet.core.model.unet) ---\n\n"
        + "".join(line for i, line in enumerate(lines, 1) if i not in drop)
        + "\n\n# --- added by napari-unet's bioimage.io export: the exported module ---\n\n"
        + inspect.getsource(UNetProbabilities)
    )


def write_weights(model: UNet, root: Path, example: np.ndarray,
                   weight_formats: Sequence[str]) -> dict[str, Any]:
    """The weight files of each format and their ``weights`` entries."""
    (root / ARCH_FILE).write_text(architecture_source(), encoding="utf-8")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, root / "weights.pt")
    torch_version = torch.__version__.split("+")[0]
    weights: dict[str, Any] = {
        "pytorch_state_dict": {
            **file_entry(root, "weights.pt"),
            "architecture": {
                **file_entry(root, ARCH_FILE),
                "callable": UNetProbabilities.__name__,
                "kwargs": dict(model.config),
            },
            "pytorch_version": torch_version,
        }
    }
    if "torchscript" in weight_formats:
        export_torchscript(model, root / "weights_torchscript.pt", example=example)
        weights["torchscript"] = {
            **file_entry(root, "weights_torchscript.pt"),
            "parent": "pytorch_state_dict",
            "pytorch_version": torch_version,
        }
    if "onnx" in weight_formats:
        export_onnx(model, root / "weights.onnx", example=example)
        weights["onnx"] = {
            **file_entry(root, "weights.onnx"),
            "parent": "pytorch_state_dict",
            "opset_version": ONNX_OPSET,
        }
    return weights
