"""Named models shipped inside the package: ``napari-unet predict --model nuclei``.

A registry of starting models that load with no network access. Each entry names a model file
(safetensors; float16 weights are allowed, loading casts them to float32) and its model card
(Markdown following the bioimage.io model fields: how it was trained, on which data, its
figures) in this folder. An entry whose file is not in this installation gives a clear error
rather than a stand-in: weights are shipped only once they have really been trained
(``scripts/train_shipped_model.py`` writes the file and the card).

Importing this module imports neither torch nor Qt.

Examples
--------
>>> "nuclei" in model_names()
True
>>> resolve_model("my_model.safetensors").name  # not a registry name: returned as given
'my_model.safetensors'
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

__all__ = [
    "REGISTRY",
    "ShippedModel",
    "available_models",
    "model_card",
    "model_names",
    "model_path",
    "resolve_model",
]

_HERE = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class ShippedModel:
    """One registry entry: a model file and its card in this folder."""

    name: str
    file: str
    card: str
    description: str

    @property
    def path(self) -> Path:
        return _HERE / self.file

    @property
    def card_path(self) -> Path:
        return _HERE / self.card


#: The named models; a name here is a promise of a file only once it is trained and shipped.
REGISTRY: dict[str, ShippedModel] = {
    "nuclei": ShippedModel(
        name="nuclei",
        file="nuclei.safetensors",
        card="nuclei.md",
        description="2D nuclei (fluorescence and H&E-like brightfield), trained on DSB2018 "
        "(BBBC038, CC0)",
    ),
}


def model_names() -> list[str]:
    """The registry's names (whether or not their weights are in this installation)."""
    return sorted(REGISTRY)


def available_models() -> list[str]:
    """The names whose model file is in this installation.

    Examples
    --------
    >>> set(available_models()) <= set(model_names())
    True
    """
    return [n for n in model_names() if REGISTRY[n].path.is_file()]


def model_path(name: str) -> Path:
    """The file of the shipped model ``name``; a clear error when unknown or not shipped.

    Raises
    ------
    KeyError
        ``name`` is not in the registry.
    FileNotFoundError
        The name is known but its weights are not in this installation.
    """
    if name not in REGISTRY:
        raise KeyError(f"model: {name!r} is not a shipped model; expected one of "
                       f"{', '.join(model_names())} or a model file")
    entry = REGISTRY[name]
    if not entry.path.is_file():
        raise FileNotFoundError(
            f"model: the shipped model {name!r} has no weights in this installation yet "
            f"(expected {entry.path}); train it with scripts/train_shipped_model.py, or pass a "
            "model file (.safetensors) instead"
        )
    return entry.path


def model_card(name: str) -> str:
    """The Markdown model card of a shipped model ('' when it has none yet)."""
    path = REGISTRY[name].card_path if name in REGISTRY else None
    return path.read_text(encoding="utf-8") if path is not None and path.is_file() else ""


def resolve_model(value: str | os.PathLike) -> Path:
    """A model file from a path or a shipped model's name.

    An existing file wins over a registry name; a registry name gives its shipped file (or the
    error of :func:`model_path`); anything else comes back as a Path for the caller to check.
    """
    path = Path(value)
    if path.is_file() or str(value) not in REGISTRY:
        return path
    return model_path(str(value))
