"""Former home of the TorchScript/ONNX exports: see :mod:`napari_unet.core.formats`."""

from napari_unet.core.formats import EXPORT_FORMATS, export_model
from napari_unet.core.formats.tensors import (
    ONNX_OPSET,
    UNetProbabilities,
    export_onnx,
    export_torchscript,
    make_test_input,
    normalized_test_input,
    probability_model,
    reference_output,
)

__all__ = [
    "EXPORT_FORMATS",
    "ONNX_OPSET",
    "UNetProbabilities",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "make_test_input",
    "normalized_test_input",
    "probability_model",
    "reference_output",
]
