"""Files in and out: model files, plain PyTorch weights, and the exchange formats.

- :mod:`.model_file` — napari-unet's model file: one ``.safetensors`` with the weights and JSON
  metadata (:func:`save_model`, :func:`load_model`, :func:`read_metadata`); never unpickled.
- :mod:`.health` — a loaded model is checked before any use (:func:`check_model`: finite
  float weights, one small forward pass giving finite probabilities that depend on the input;
  :func:`check_metadata`): a model that computes garbage is refused as a broken file.
- :mod:`.pretrained` — plain PyTorch ``.pt``/``.pth`` state dicts, loaded with
  ``weights_only=True`` (for fine-tuning).
- :mod:`.export` — :func:`export_model` to any format below.
- :mod:`.tensors` — TorchScript and ONNX (probabilities out, checked against PyTorch).
- :mod:`.bioimageio` — bioimage.io model packages (built on :mod:`.tensors`).
"""

from napari_unet.core.io.export import EXPORT_FORMATS, export_model
from napari_unet.core.io.health import check_metadata, check_model
from napari_unet.core.io.model_file import (
    default_class_names,
    load_model,
    read_metadata,
    save_model,
)
from napari_unet.core.io.pretrained import load_pretrained

__all__ = ["EXPORT_FORMATS", "check_metadata", "check_model", "default_class_names",
           "export_model", "load_model", "load_pretrained", "read_metadata", "save_model"]
