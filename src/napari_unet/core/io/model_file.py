"""Model files: one ``.safetensors`` file with the weights and JSON metadata; never unpickled.

A model file holds the U-Net's ``state_dict`` as safetensors tensors and, in the safetensors header
(``__metadata__``, string → string), JSON-encoded values:

- ``"architecture"``: ``UNet.config`` (the constructor arguments), enough to rebuild the network;
- ``"normalization"``: how prediction must normalise images (like ``DEFAULT_NORMALIZATION``);
- ``"class_names"``: one name per output class;
- ``"training"``: the training settings; ``"history"``: a list of dicts (one per logged step);
- ``"napari_unet_version"``; and any extra keyword given to :func:`save_model`.

:func:`load_model` parses the header itself first (8-byte little-endian length + JSON), so a file
that is not a safetensors file, or is truncated or corrupted, gives a ``ValueError`` that says so;
then it checks the metadata, the tensors' shapes and dtypes against the declared architecture
before allocating, and the loaded model with one small forward pass
(:mod:`napari_unet.core.io.health`): a file whose model computes garbage is refused as broken.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from pathlib import Path
from typing import Any

import torch

from napari_unet import __version__
from napari_unet.core.device import cpu_layout
from napari_unet.core.io.health import broken, check_metadata, check_model
from napari_unet.core.model.unet import UNet
from napari_unet.core.normalize import DEFAULT_NORMALIZATION
from napari_unet.errors import is_no_space, no_space

__all__ = [
    "default_class_names",
    "load_model",
    "model_metadata",
    "read_header",
    "read_metadata",
    "save_model",
    "write_atomic",
]

logger = logging.getLogger(__name__)

#: The header may not be larger than this (safetensors' own limit is 100 MB).
_MAX_HEADER = 100_000_000


def default_class_names(num_classes: int, *, target: str = "objects") -> list[str]:
    """Names of the output classes used when none are given; a ``"tissue"`` target's third
    class is the wall between cells (:mod:`napari_unet.core.targets.tissue`).

    Examples
    --------
    >>> default_class_names(3)
    ['background', 'cell', 'border']
    >>> default_class_names(3, target="tissue")
    ['background', 'cell', 'wall']
    """
    names = ["background", "cell", "wall" if target == "tissue" else "border"]
    if num_classes <= len(names):
        return names[:num_classes]
    return names + [f"class_{i}" for i in range(len(names), num_classes)]


def save_model(model: UNet, path: str | os.PathLike, **metadata: Any) -> Path:
    """Write ``model``'s weights and ``metadata`` to one ``.safetensors`` file.

    Parameters
    ----------
    model : UNet
        The network; ``model.config`` is stored as ``"architecture"``.
    path : str or PathLike
        Output file; parent folders are created. The suffix ``.safetensors`` is recommended.
    **metadata
        JSON-serialisable values (``normalization``, ``class_names``, ``training``, ``history``,
        or anything else). ``normalization`` defaults to ``DEFAULT_NORMALIZATION`` and
        ``class_names`` to :func:`default_class_names`.

    Returns
    -------
    Path of the written file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> net = UNet(depth=1, base_channels=2)
    >>> p = save_model(net, pathlib.Path(tempfile.mkdtemp()) / "m.safetensors", note="hi")
    >>> model, meta = load_model(p)
    >>> meta["note"], meta["architecture"]["base_channels"]
    ('hi', 2)
    """
    from safetensors.torch import save

    path = Path(path)
    header: dict[str, str] = {}
    for key, value in model_metadata(model, **metadata).items():
        try:
            header[str(key)] = json.dumps(value)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"metadata {key!r}: expected a JSON-serialisable value, got "
                f"{type(value).__name__} ({err})"
            ) from None
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    write_atomic(path, save(tensors, metadata=header))
    logger.debug("saved model to %s", path)
    return path


def model_metadata(model: UNet, **metadata: Any) -> dict[str, Any]:
    """The metadata :func:`save_model` writes for ``model``: the defaults
    (``normalization``, ``class_names``, ``training``, ``history``), ``metadata``, the
    ``architecture`` (``model.config``) and the version.

    >>> meta = model_metadata(UNet(depth=1, base_channels=2), note="hi")
    >>> meta["note"], meta["architecture"]["depth"], meta["class_names"]
    ('hi', 1, ['background', 'cell'])
    """
    if not isinstance(model, UNet):
        raise TypeError(f"model: expected a napari_unet UNet, got {type(model).__name__}")
    meta: dict[str, Any] = {
        "normalization": dict(DEFAULT_NORMALIZATION),
        "class_names": default_class_names(model.num_classes),
        "training": {},
        "history": [],
    }
    meta.update(metadata)
    meta["architecture"] = dict(model.config)
    meta["napari_unet_version"] = __version__
    return meta


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` completely or not at all: to ``<path>.tmp``, then renamed.

    A crash leaves the earlier file (or none); a write that finds no room (a full disk, a
    file-size limit) removes its partial file and raises the one-line error
    :func:`napari_unet.errors.no_space` (an ``OSError``, ``errno.ENOSPC``) that says how much
    was needed. Parent folders are created.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = write_atomic(pathlib.Path(tempfile.mkdtemp()) / "a" / "x.bin", b"abc")
    >>> p.read_bytes(), sorted(q.name for q in p.parent.iterdir())
    (b'abc', ['x.bin'])
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if is_no_space(err):
            raise no_space(path, len(data)) from None
        raise
    return path


def read_header(path: Path) -> dict:
    """Parse and check the safetensors header; ValueError for anything malformed."""
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError(
                f"{path}: not a safetensors model file (only {size} bytes); give a model file "
                "written by napari-unet (.safetensors), or copy this one again if it was one"
            )
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > _MAX_HEADER or 8 + n > size:
            raise ValueError(
                f"{path}: not a safetensors model file or truncated (header length {n}, file "
                f"size {size} bytes); give a model file written by napari-unet (.safetensors), "
                "or copy this one again if it was one"
            )
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise broken(path, "corrupted safetensors header (not valid JSON)") from None
    if not isinstance(header, dict):
        raise broken(path, "corrupted safetensors header (not a JSON object)")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise broken(path, f"corrupted safetensors header (tensor {name!r})") from None
    if 8 + n + end > size:
        raise broken(path, f"truncated ({size} bytes, the header announces {8 + n + end})")
    return header


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Metadata of a model file (JSON-decoded), without loading the weights.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = save_model(UNet(depth=1, base_channels=2), pathlib.Path(tempfile.mkdtemp()) / "m.safetensors")
    >>> read_metadata(p)["class_names"]
    ['background', 'cell']
    """
    path = Path(path)
    raw = read_header(path).get("__metadata__") or {}
    if not isinstance(raw, dict):
        raise broken(path, "corrupted safetensors header (its metadata is not a mapping)")
    ours = "napari_unet_version" in raw  # save_model JSON-encodes every value
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except (TypeError, json.JSONDecodeError) as err:
            if ours or key == "architecture":
                raise broken(path, f"its metadata {key!r} is not valid JSON ({err})") from None
            meta[key] = value  # a plain string written by another tool
    return meta


_FLOATS = ("F64", "F32", "F16", "BF16")
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                "I8": 1, "U8": 1, "BOOL": 1}


class _Shapes(UNet):
    """The U-Net without its weight initialisation: built on the meta device only for the
    tensors' names and shapes. (A random init on the meta device goes through torch's Python
    reference kernels, whose first use imports torch._dynamo: 1-2 s and ~70 MB in a process,
    napari's included, that had not imported it.)"""

    def reset_parameters(self) -> None:
        pass


def _check_declared(path: Path, arch: dict) -> None:
    """A model file is untrusted input: check its declared architecture against the tensors it
    really holds, before anything is allocated.

    The architecture is built on PyTorch's ``meta`` device (shapes only, no memory); every
    tensor must be in the file with the shape it implies and a byte size that matches its
    shape. So what :func:`load_model` allocates is bounded by the file's size: a small file
    declaring a huge network is refused here, not after asking for gigabytes."""
    header = read_header(path)
    declared = sum(math.prod(int(d) for d in info.get("shape", ())) for name, info in
                   header.items() if name != "__metadata__" and isinstance(info, dict))
    count = None
    plain = (arch.get("ndim", 2) == 2 and arch.get("norm") is None and arch.get("pool") is None
             and arch.get("scheme", "unet") == "unet")
    if plain:  # a quick count first: a huge declared network is refused without building it
        from napari_unet.core.model.memory import count_parameters

        try:
            count = count_parameters(**{k: arch[k] for k in (
                "in_channels", "num_classes", "depth", "base_channels") if k in arch})
        except (TypeError, ValueError, OverflowError):
            count = None
    if count is not None and count != declared:
        raise broken(path, f"the weights do not match the declared architecture {arch!r}: it "
                     f"has {count:,} weights, the file holds {declared:,} (refused before "
                     "loading)")
    try:
        with torch.device("meta"):
            expected = {k: (tuple(v.shape), v.is_floating_point())
                        for k, v in _Shapes(**arch).state_dict().items()}
    except (TypeError, ValueError, OverflowError, RuntimeError) as err:
        raise broken(path, f"unusable architecture {arch!r} ({err})") from None
    stored = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
            dtype = str(info["dtype"])
            itemsize = _DTYPE_BYTES[dtype]
        except (TypeError, KeyError, ValueError):
            raise broken(path, f"corrupted safetensors header (tensor {name!r})") from None
        if end - begin != itemsize * math.prod(shape):
            raise broken(path, f"corrupted safetensors header (tensor {name!r} of shape "
                         f"{shape} declares {end - begin} bytes)")
        if name in expected and expected[name][1] != (dtype in _FLOATS):
            want = "floating-point" if expected[name][1] else "integer"
            raise broken(path, f"tensor {name!r} holds {dtype} values where the network has "
                         f"{want} ones")
        stored[name] = shape
    missing = sorted(set(expected) - set(stored))
    wrong = sorted(k for k in set(expected) & set(stored) if expected[k][0] != stored[k])
    if missing or wrong or len(stored) != len(expected):
        count = sum(math.prod(s) for s, _ in expected.values())
        detail = (f"missing {missing[:3]}" if missing else
                  f"{wrong[0]} is {stored[wrong[0]]}, not {expected[wrong[0]][0]}" if wrong else
                  f"{len(stored)} tensors instead of {len(expected)}")
        raise broken(path, f"the weights do not match the declared architecture {arch!r} "
                     f"({count:,} weights): {detail} (refused before loading)")


def load_model(
    path: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> tuple[UNet, dict[str, Any]]:
    """Rebuild a U-Net from a model file written by :func:`save_model` (no pickle involved).

    Parameters
    ----------
    path : str or PathLike
        A ``.safetensors`` file.
    device : str or torch.device
        Where to put the weights.

    Returns
    -------
    (UNet in eval mode, metadata dict)

    Raises
    ------
    ValueError
        The file is not a safetensors file, is truncated or corrupted, lacks the architecture,
        its metadata or weights do not fit the architecture, or the model computes garbage
        (non-finite weights or output: :func:`napari_unet.core.io.health.check_model`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = save_model(UNet(depth=1, base_channels=2), pathlib.Path(tempfile.mkdtemp()) / "m.safetensors")
    >>> model, meta = load_model(p)
    >>> model.depth, meta["normalization"]["method"]
    (1, 'percentile')
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_metadata(path)
    arch = meta.get("architecture")
    if not isinstance(arch, dict):
        raise ValueError(
            f"{path}: no 'architecture' in the file's metadata, so it is not a napari-unet "
            "model; give a model file written by napari-unet (.safetensors), or load plain "
            "PyTorch weights with --init (napari_unet.core.io.load_pretrained)"
        )
    check_metadata(meta, source=path)
    _check_declared(path, arch)  # before a single weight is allocated
    try:
        model = UNet(**arch)
    except (TypeError, ValueError) as err:
        raise broken(path, f"unusable architecture {arch!r} ({err})") from None
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError) as err:
        raise broken(path, f"corrupted safetensors file ({err})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise broken(path, "the weights do not match the stored architecture "
                     f"({first[1].strip() if len(first) > 1 else first[0]})") from None
    model.to(device).eval()
    cpu_layout(model)  # a 2D float32 network on the CPU predicts 1.6-2.0x faster
    check_model(model, source=path)  # a model that computes garbage is not a model
    return model, meta
