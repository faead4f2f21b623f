"""Former home of the TorchScript/ONNX exports: see :mod:`napari_unet.core.formats`."""

from napari_unet.core.formats import EXPORT_FORMATS, export_model
from napari_unet.core.formats.tensors import *  # noqa: F403
from napari_unet.core.formats.tensors import __all__ as _tensor_names

__all__ = ["EXPORT_FORMATS", "export_model", *_tensor_names]
