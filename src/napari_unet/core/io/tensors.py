"""Export a U-Net to formats other tools run: TorchScript, ONNX and a bioimage.io package.

Every export contains the network *with* the soft-max over the classes
(:class:`UNetProbabilities`), so an exported model maps a normalised image ``(N, C, H, W)`` to
per-class probabilities ``(N, num_classes, h, w)`` (a 3D model: ``(N, C, D, H, W)`` volumes,
axes b, c, z, y, x) — the same numbers as napari-unet's own
prediction, with no post-processing left to the consumer. With ``padding="valid"`` (the paper)
the output is smaller than the input by ``2 * model.margin`` pixels per axis and only the valid
input sizes ``min + n * 2**depth`` are accepted (see :func:`napari_unet.core.model.valid_input_shape`).

The normalisation (percentiles of each image) is *not* inside the exported network: TorchScript
and ONNX expect an image normalised like :func:`normalized_test_input` does, and the bioimage.io
package describes it as ``scale_range`` pre-processing (see
:mod:`napari_unet.core.io.bioimageio`).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_unet.core.model.unet import UNet
from napari_unet.core.normalize import normalize, stored_normalization

__all__ = [
    "UNetProbabilities",
    "export_onnx",
    "export_torchscript",
    "make_test_input",
    "normalized_test_input",
    "probability_model",
    "reference_output",
]

logger = logging.getLogger(__name__)

#: ONNX operator set used for the export (supported by onnxruntime >= 1.14).
ONNX_OPSET = 17


class UNetProbabilities(UNet):
    """The U-Net followed by the soft-max over the classes: outputs probabilities.

    Same constructor and ``state_dict`` keys as :class:`~napari_unet.core.model.UNet`, so the
    weights of a trained U-Net load into it unchanged. This is the module that every export holds.

    Examples
    --------
    >>> import torch
    >>> net = UNetProbabilities(depth=1, base_channels=4)
    >>> p = net(torch.zeros(1, 1, 20, 20))
    >>> tuple(p.shape), bool(torch.allclose(p.sum(1), torch.ones(1, 4, 4)))
    ((1, 2, 4, 4), True)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(super().forward(x), dim=1)


def probability_model(model: UNet) -> UNetProbabilities:
    """A CPU copy of ``model`` in eval mode that outputs soft-max probabilities.

    Examples
    --------
    >>> net = UNet(depth=1, base_channels=2)
    >>> type(probability_model(net)).__name__
    'UNetProbabilities'
    """
    if not isinstance(model, UNet):
        raise TypeError(f"model: expected a napari_unet UNet, got {type(model).__name__}")
    out = UNetProbabilities(**model.config)
    out.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    return out.eval()


def make_test_input(
    model: UNet, *, image: np.ndarray | None = None, min_shape: int = 256, seed: int = 0
) -> np.ndarray:
    """A raw (un-normalised) float32 test tensor ``(1, C, H, W)`` (3D model: ``(1, C, D, H, W)``)
    of a valid input size.

    Parameters
    ----------
    model : UNet
        Decides the channels and the valid sizes.
    image : ndarray, optional
        ``(H, W)`` or ``(C, H, W)`` image (3D model: ``(D, H, W)`` or ``(C, D, H, W)``) to crop
        (centre) or mirror-pad to the valid size; default: synthetic touching cells
        (:func:`napari_unet.core.synthetic.synthetic_cells`; balls in 3D).
    min_shape : int
        The tensor is the smallest valid input of at least this side (when ``image`` is None).
    seed : int
        Seed of the synthetic image.

    Examples
    --------
    >>> make_test_input(UNet(depth=2, base_channels=2), min_shape=40).shape
    (1, 1, 44, 44)
    """
    if image is None:
        side = model.valid_input_shape((min_shape,) * model.ndim) if model.ndim == 2 else \
            model.valid_input_shape(1)  # fmt: skip
        if model.ndim == 2:
            from napari_unet.core.synthetic import synthetic_cells

            img, _ = synthetic_cells(side, seed=seed)
        else:
            img = _balls(side, seed)
        img = np.stack([img] * model.in_channels) if model.in_channels > 1 else img[None]
    else:
        from napari_unet.core.predict.tiled import as_chw

        img = as_chw(model, np.asarray(image, dtype=np.float32))
        side = model.valid_input_shape(img.shape[1:])
        pads = [(0, 0)] + [((s - n) // 2, s - n - (s - n) // 2) if s > n else (0, 0)
                           for s, n in zip(side, img.shape[1:], strict=True)]
        img = np.pad(img, pads, mode="symmetric")
        t = [(n - s) // 2 for s, n in zip(side, img.shape[1:], strict=True)]
        img = img[(slice(None), *(slice(a, a + s) for a, s in zip(t, side, strict=True)))]
    return np.ascontiguousarray(img[None], dtype=np.float32)


def _balls(shape, seed: int) -> np.ndarray:
    """A float32 volume of bright touching balls on a dim, noisy background."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    img = np.zeros(shape, np.float32)
    r = max(2.0, min(shape) / 5)
    for c in rng.random((8, len(shape))) * np.asarray(shape):
        img[((grid - c) ** 2).sum(-1) <= r * r] = 1.0
    return img + 0.1 * rng.random(shape).astype(np.float32)


def normalized_test_input(raw: np.ndarray, metadata: Mapping[str, Any] | None) -> np.ndarray:
    """Normalise a raw ``(N, C, H, W)`` (or ``(N, C, D, H, W)``) tensor as the model expects:
    each channel of each sample maps its ``low``/``high`` percentiles to 0/1
    (``metadata["normalization"]``).

    Examples
    --------
    >>> x = normalized_test_input(np.arange(16.0).reshape(1, 1, 4, 4), {"normalization": {
    ...     "method": "percentile", "low": 0, "high": 100}})
    >>> round(float(x.min()), 3), round(float(x.max()), 3)
    (0.0, 1.0)
    """
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim not in (4, 5):
        raise ValueError(
            f"raw: expected a (N, C, H, W) or (N, C, D, H, W) array, got shape {raw.shape}"
        )
    norm = stored_normalization(metadata)
    if norm is None:
        return raw.copy()
    return np.stack([normalize(s, low=norm["low"], high=norm["high"], channel_axis=0,
                               invert=norm.get("invert", False)) for s in raw])


def reference_output(
    model: UNet, raw: np.ndarray, metadata: Mapping[str, Any] | None = None
) -> np.ndarray:
    """napari-unet's own probabilities ``(N, num_classes, *spatial)`` for a raw test tensor.

    Examples
    --------
    >>> net = UNet(depth=1, base_channels=2)
    >>> reference_output(net, make_test_input(net, min_shape=20)).shape
    (1, 2, 4, 4)
    """
    x = torch.from_numpy(normalized_test_input(raw, metadata))
    with torch.no_grad():
        return probability_model(model)(x).numpy().astype(np.float32)


def _example(model: UNet, example: np.ndarray | None) -> torch.Tensor:
    if example is None:
        side = model.valid_input_shape(1)
        return torch.rand(1, model.in_channels, *side, generator=torch.Generator().manual_seed(0))
    return torch.as_tensor(np.asarray(example, dtype=np.float32))


def export_torchscript(
    model: UNet, path: str | os.PathLike, *, example: np.ndarray | None = None
) -> Path:
    """Write ``model`` + soft-max as a traced TorchScript file (``torch.jit.load`` reads it).

    The trace records the shape arithmetic, so it runs on any batch size and valid input size.

    Parameters
    ----------
    model : UNet
    path : str or PathLike
        Output file, e.g. ``model.pt``; parent folders are created.
    example : ndarray, optional
        A normalised ``(N, C, H, W)`` input to trace with (default: the smallest valid input).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = export_torchscript(UNet(depth=1, base_channels=2),
    ...                        pathlib.Path(tempfile.mkdtemp()) / "m.pt")
    >>> tuple(torch.jit.load(str(p))(torch.zeros(2, 1, 36, 20)).shape)
    (2, 2, 20, 4)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = probability_model(model)
    with warnings.catch_warnings(), torch.no_grad():
        # the tracer warns about the Python-side size checks in UNet.forward: they are
        # constant for a valid input and the recorded graph keeps the size arithmetic
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, _example(model, example), check_trace=False)
    traced.save(str(path))
    logger.info("wrote TorchScript model to %s", path)
    return path


def export_onnx(
    model: UNet,
    path: str | os.PathLike,
    *,
    example: np.ndarray | None = None,
    opset: int = ONNX_OPSET,
) -> Path:
    """Write ``model`` + soft-max as an ONNX file with dynamic batch and spatial sizes.

    Input ``"input"`` ``(batch, C, y, x)`` float32 (normalised), output ``"output"``
    ``(batch, num_classes, y', x')`` probabilities; a 3D model has axes ``z, y, x``. Uses PyTorch's TorchScript-based exporter
    (``dynamo=False``), which needs no package beyond ``onnx``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = export_onnx(UNet(depth=1, base_channels=2), pathlib.Path(tempfile.mkdtemp()) / "m.onnx")
    >>> p.suffix
    '.onnx'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = probability_model(model)
    dynamic = {0: "batch", **{2 + i: a for i, a in enumerate("zyx"[-model.ndim :])}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (_example(model, example),),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": dynamic, "output": dynamic},
            opset_version=int(opset),
        )
    logger.info("wrote ONNX model to %s", path)
    return path
