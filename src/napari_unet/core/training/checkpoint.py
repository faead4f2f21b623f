"""Training checkpoints without pickle: one complete file to resume from, and a model file.

``<dir>/<name>.state.safetensors`` is the checkpoint: the weights, the model's metadata, the
optimiser's tensors and the RNG states as safetensors tensors, and in its header the step,
elapsed time, best validation score, optimiser settings, numpy generator state, what
identifies the run (:func:`napari_unet.core.training.identity.run_identity`: a hash of every
training pair, the settings) and a sha256 of it all. It is written to a temporary name and
renamed, so it is complete or absent: a crash, a full disk or a file-size limit never leaves a
half-written or mismatched checkpoint (the write that finds no room removes its partial file
and says how much it needed). ``<dir>/<name>.safetensors``, written after it, is an ordinary
model file of the same weights (:func:`napari_unet.core.io.save_model`, for prediction);
resuming never reads it, so a crash between the two writes leaves a checkpoint that resumes
correctly.

:func:`load_checkpoint` reads the checkpoint back (checked as a loaded model is:
:func:`napari_unet.core.io.health.check_model`); :mod:`napari_unet.core.training.identity`
names what differs between the run a checkpoint belongs to and the one about to continue
it. A state file of an earlier version (``napari-unet-train-state-1``, no weights) resumes
with the model file beside it only where both belong to the same step; a mismatched pair is
refused.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from napari_unet.core.io.health import broken, check_metadata, check_model
from napari_unet.core.io.model_file import model_metadata, read_header, save_model, write_atomic
from napari_unet.core.model.unet import UNet
from napari_unet.core.training.identity import run_identity

__all__ = [
    "FORMAT", "checkpoint_dir_of", "checkpoint_files", "load_checkpoint", "load_state",
    "relative_paths", "restore_trainer", "rng_states", "save_checkpoint", "save_state",
    "save_trainer_state", "state_path", "stored_settings",
]

#: the state file's format (``-1``: without the weights, read with a pair check)
FORMAT = "napari-unet-train-state-2"
_FORMAT_1 = "napari-unet-train-state-1"


def state_path(model_path: str | os.PathLike) -> Path:
    """The state file that belongs to a checkpoint's model file.

    Examples
    --------
    >>> state_path("ckpt/last.safetensors").name
    'last.state.safetensors'
    """
    p = Path(model_path)
    stem = p.name[: -len(".safetensors")] if p.name.endswith(".safetensors") else p.name
    return p.with_name(stem + ".state.safetensors")


def save_state(
    path: str | os.PathLike,
    *,
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    info: dict[str, Any],
    weights: dict[str, torch.Tensor] | None = None,
    model_meta: dict[str, Any] | None = None,
) -> Path:
    """Write the optimiser state, extra ``tensors`` (e.g. RNG states), JSON ``info`` and, for a
    complete checkpoint, the model's ``weights`` and metadata, atomically
    (:func:`napari_unet.core.io.model_file.write_atomic`)."""
    from safetensors.torch import save

    sd = optimizer.state_dict()
    out = {f"rng/{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}
    out.update({f"model/{k}": v.detach().cpu().contiguous() for k, v in (weights or {}).items()})
    plain: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                out[f"opt/{pid}/{key}"] = value.detach().cpu().contiguous()
            else:
                plain.setdefault(str(pid), {})[key] = value
    header = {
        "info": json.dumps(info),
        "param_groups": json.dumps(sd["param_groups"]),
        "opt_plain": json.dumps(plain),
        "format": FORMAT if weights is not None else _FORMAT_1,
    }
    if model_meta is not None:
        header["model_meta"] = json.dumps(model_meta)
    header["sha256"] = _digest(out, header)
    return write_atomic(path, save(out, metadata=header))


def _digest(tensors: dict[str, torch.Tensor], header: dict[str, str]) -> str:
    """sha256 of every tensor's bytes and every header value: a changed byte anywhere in a
    state file is found (what parses is not always what was written)."""
    h = hashlib.sha256()
    for key in sorted(header):
        if key != "sha256":
            h.update(f"{key}={header[key]}".encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the bytes, not a copy
    return h.hexdigest()


def load_state(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a state file: ``(optimizer_state_dict, rng_tensors, info)``; never unpickles.
    ``info["format"]`` is the file's format; with :data:`FORMAT` ``info["model"]`` holds
    ``(weights, model metadata)``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_header(path).get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("format") not in (FORMAT, _FORMAT_1):
        raise broken(path, "not a napari-unet training state file (no known format in its "
                     "header)")
    try:
        flat = load_file(str(path), device="cpu")
        info = json.loads(meta["info"])
        groups = json.loads(meta["param_groups"])
        plain = json.loads(meta["opt_plain"])
        model_meta = json.loads(meta["model_meta"]) if meta["format"] == FORMAT else None
        if meta["format"] == FORMAT and meta["sha256"] != _digest(flat, meta):
            raise broken(path, "its contents do not match the sha256 it was written with "
                         "(the file was changed or damaged)")
        info.update(format=meta["format"], source=str(path))
    except (SafetensorError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise broken(path, f"corrupted training state ({err})") from None
    state: dict[int, dict[str, Any]] = {}
    rng, weights = {}, {}
    try:
        for name, value in flat.items():
            kind, _, rest = name.partition("/")
            if kind == "rng":
                rng[rest] = value
            elif kind == "model":
                weights[rest] = value
            else:
                pid, _, key = rest.partition("/")
                state.setdefault(int(pid), {})[key] = value
        for pid, values in plain.items():
            state.setdefault(int(pid), {}).update(values)
        for key in ("step", "elapsed_s", "best", "numpy_rng"):
            info[key]
    except (ValueError, KeyError, AttributeError, TypeError) as err:
        raise broken(path, f"corrupted training state ({type(err).__name__}: {err})") from None
    if model_meta is not None:
        info["model"] = (weights, model_meta)
    return {"state": state, "param_groups": groups}, rng, info


def checkpoint_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(model file, state file)`` of a checkpoint given as its folder (its ``last``
    checkpoint), its model file or its state file.

    >>> [p.name for p in checkpoint_files("m.checkpoints/best.state.safetensors")]
    ['best.safetensors', 'best.state.safetensors']
    """
    path = Path(path)
    if path.is_dir():
        path = path / "last.safetensors"
    if path.name.endswith(".state.safetensors"):
        path = path.with_name(path.name[: -len(".state.safetensors")] + ".safetensors")
    return path, state_path(path)


def stored_settings(path: str | os.PathLike) -> dict[str, Any]:
    """The settings of the run whose checkpoint is ``path`` (:func:`checkpoint_files`), read
    from the state file's header only: what a resume keeps where it gives none, so that it
    continues the same run (its identity, :func:`napari_unet.core.training.identity.
    run_identity`, leaves out the budget, device and frequencies). {} for a checkpoint that
    stores none or cannot be read (:func:`load_checkpoint` says why).

    >>> stored_settings("no/such/folder")
    {}
    """
    try:
        meta = read_header(checkpoint_files(path)[1]).get("__metadata__") or {}
        settings = json.loads(meta["info"])["identity"]["settings"]
    except (ValueError, OSError, KeyError, TypeError, AttributeError):
        return {}
    return dict(settings) if isinstance(settings, dict) else {}


def load_checkpoint(path: str | os.PathLike):
    """``(model, metadata, (optimizer_state, rng, info))`` of the checkpoint ``path`` (its
    folder, its model file ``last.safetensors`` or its state file), as
    :func:`restore_trainer` takes them.

    The weights come from the state file, checked as any loaded model
    (:func:`~napari_unet.core.io.health.check_model`); an earlier version's state file (no
    weights) takes the model file beside it, refused unless both belong to the same step.

    Raises
    ------
    ValueError
        A missing, broken or mismatched checkpoint, naming the file and the fix.
    """
    path, state_file = checkpoint_files(path)
    if not state_file.is_file():
        raise FileNotFoundError(
            f"{state_file}: no training state there, so {path.parent} holds no complete "
            "checkpoint; resume from a folder with last.state.safetensors, or fine-tune from "
            f"its model with --init {path}" if path.is_file() else
            f"{path.parent}: no checkpoint there (no {state_file.name}); give the checkpoint "
            "folder of a run (MODEL.checkpoints), or start a new run")
    opt_state, rng, info = load_state(state_file)
    if "model" in info:
        weights, meta = info.pop("model")
        check_metadata(meta, source=state_file)
        try:
            model = UNet(**meta["architecture"])
            model.load_state_dict(weights, strict=True)
        except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise broken(state_file, f"its weights do not fit its architecture ({first})"
                         ) from None
        check_model(model.eval(), source=state_file)
        return model, meta, (opt_state, rng, info)
    from napari_unet.core.io.pretrained import load_pretrained

    model, meta = load_pretrained(path)
    step = (meta.get("training") or {}).get("step")
    if step != info["step"]:
        raise ValueError(
            f"{path}: the weights (step {step}) and {state_file.name} (step {info['step']}) are "
            "not one checkpoint (a crash between their writes); resume from another "
            f"checkpoint, or fine-tune from the weights with --init {path}")
    return model, meta, (opt_state, rng, info)


def rng_states(trainer) -> tuple[dict[str, torch.Tensor], dict]:
    """Every random state a training step draws from: ``(tensors, numpy generator state)``.

    The trainer records them at the start of each step, so a checkpoint written while a step is
    under way (an exception, a second Ctrl-C) stores the states of the step boundary that its
    weights and optimiser belong to, and ``--resume`` repeats that step exactly.
    """
    tensors = {"torch": torch.get_rng_state(), "augment": trainer.generator.get_state()}
    if trainer.device.type == "cuda":
        tensors["cuda"] = torch.cuda.get_rng_state(trainer.device)
    return tensors, copy.deepcopy(trainer.rng.bit_generator.state)


def save_trainer_state(trainer, model_path: str | os.PathLike, snapshot=None) -> Path:
    """Write the complete checkpoint of ``trainer`` (a
    :class:`~napari_unet.core.training.Trainer`) beside its model file: weights and metadata
    (``snapshot``, default ``trainer.snapshot()``), optimiser, RNG states, step, elapsed time,
    best score, the run's identity.

    Mid-step (``trainer.boundary`` set) the RNG states of the step's start are written."""
    boundary = getattr(trainer, "boundary", None)
    tensors, numpy_state = boundary if boundary is not None else rng_states(trainer)
    model, meta = snapshot if snapshot is not None else trainer.snapshot()
    info = {"step": trainer.step, "elapsed_s": trainer.elapsed, "best": trainer.best,
            "numpy_rng": numpy_state,
            "scaler": trainer.scaler.state_dict(),
            "identity": run_identity(trainer.pairs, trainer.config)}
    return save_state(state_path(model_path), optimizer=trainer.optimizer, tensors=tensors,
                      info=info, weights=model.state_dict(),
                      model_meta=model_metadata(model, **meta))


def save_checkpoint(trainer, model_path: str | os.PathLike) -> Path:
    """The checkpoint first (:func:`save_trainer_state`: complete or absent), then its model
    file for prediction; returns the model file's path."""
    model, meta = trainer.snapshot()
    meta = relative_paths(meta, model_path)
    save_trainer_state(trainer, model_path, (model, meta))
    return save_model(model, model_path, **meta)


def relative_paths(meta: dict[str, Any], model_path: str | os.PathLike) -> dict[str, Any]:
    """``meta`` with its ``training["checkpoint_dir"]`` relative to the folder of the model
    file ``model_path``, so that a run folder (a model beside its checkpoints) can be moved
    and resumed from anywhere (:func:`checkpoint_dir_of` reads it back).

    >>> relative_paths({"training": {"checkpoint_dir": "runs/m.checkpoints"}},
    ...                "runs/m.safetensors")["training"]["checkpoint_dir"]
    'm.checkpoints'
    """
    training = dict(meta.get("training") or {})
    where = training.get("checkpoint_dir")
    if where is None:
        return meta
    folder = Path(model_path).absolute().parent
    training["checkpoint_dir"] = os.path.relpath(Path(where).absolute(), folder)
    return {**meta, "training": training}


def checkpoint_dir_of(meta: dict[str, Any], model_path: str | os.PathLike) -> list[Path]:
    """Where the checkpoints of the run that wrote the model file ``model_path`` (with
    metadata ``meta``) are: resolved against the model file's folder (and, for files of
    earlier versions, which stored it as given, against the working folder); [] if none.

    >>> [p.name for p in checkpoint_dir_of({"training": {"checkpoint_dir": "m.checkpoints"}},
    ...                                    "runs/m.safetensors")][:1]
    ['m.checkpoints']
    """
    where = (meta.get("training") or {}).get("checkpoint_dir") if isinstance(meta, dict) \
        else None
    if not isinstance(where, str):
        return []
    return [(Path(model_path).absolute().parent / where).resolve(), Path(where).resolve()]


def match_moment_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor of ``optimizer`` (e.g. AdamW's moments) its
    parameter's memory layout (channels-last or contiguous), in place."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p).copy_(value)


def restore_trainer(trainer, opt_state: dict, rng: dict[str, torch.Tensor], info: dict) -> None:
    """Put what :func:`load_checkpoint` read back into ``trainer`` (the inverse of
    :func:`save_trainer_state`; the weights are the model's)."""
    try:
        trainer.optimizer.load_state_dict(opt_state)
    except (ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"resume: the checkpoint's optimiser state does not fit this run "
                         f"({err}); resume with the checkpoint's --preset, or fine-tune from "
                         "its model with --init") from None
    match_moment_layout(trainer.optimizer)  # the saved moments are contiguous
    try:
        trainer.step = int(info["step"])
        trainer.elapsed = float(info["elapsed_s"])
        trainer.best = float(info["best"])
        trainer.rng.bit_generator.state = info["numpy_rng"]
        torch.set_rng_state(rng["torch"])
        trainer.generator.set_state(rng["augment"])
        if "cuda" in rng and trainer.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], trainer.device)
        if info.get("scaler"):
            trainer.scaler.load_state_dict(info["scaler"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise broken(info.get("source", "the checkpoint"),
                     f"its step, clock or random states are unusable ({err})") from None
