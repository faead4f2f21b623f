"""Training checkpoints without pickle: a model file plus a ``.state.safetensors`` file.

``<dir>/<name>.safetensors`` is an ordinary model file (:func:`napari_unet.core.io.save_model`,
usable for prediction). ``<dir>/<name>.state.safetensors`` holds what resuming needs besides the
weights: the optimiser's tensors and the RNG states as safetensors tensors, and the step, elapsed
time, best validation score, optimiser settings and numpy generator state as JSON in its header.
Both are written to a temporary name and renamed, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch

from napari_unet.core.io.model_file import read_header

__all__ = [
    "load_state", "restore_trainer", "rng_states", "save_state", "save_trainer_state",
    "state_path",
]


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
) -> Path:
    """Write the optimiser state, extra ``tensors`` (e.g. RNG states) and JSON ``info``."""
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    out = {f"rng/{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}
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
        "format": "napari-unet-train-state-1",
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(out, str(tmp), metadata=header)
    os.replace(tmp, path)
    return path


def load_state(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a state file: ``(optimizer_state_dict, rng_tensors, info)``; never unpickles."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_header(path).get("__metadata__") or {}
    if meta.get("format") != "napari-unet-train-state-1":
        raise ValueError(f"{path}: not a napari-unet training state file")
    try:
        flat = load_file(str(path), device="cpu")
        info = json.loads(meta["info"])
        groups = json.loads(meta["param_groups"])
        plain = json.loads(meta["opt_plain"])
    except (SafetensorError, KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: corrupted training state file ({err})") from None
    state: dict[int, dict[str, Any]] = {}
    rng = {}
    for name, value in flat.items():
        kind, _, rest = name.partition("/")
        if kind == "rng":
            rng[rest] = value
        else:
            pid, _, key = rest.partition("/")
            state.setdefault(int(pid), {})[key] = value
    for pid, values in plain.items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": groups}, rng, info


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


def save_trainer_state(trainer, model_path: str | os.PathLike) -> Path:
    """Write the state file of ``trainer`` (a :class:`~napari_unet.core.training.Trainer`) beside
    its checkpoint's model file: optimiser, RNG states, step, elapsed time, best score.

    Mid-step (``trainer.boundary`` set) the RNG states of the step's start are written."""
    boundary = getattr(trainer, "boundary", None)
    tensors, numpy_state = boundary if boundary is not None else rng_states(trainer)
    info = {"step": trainer.step, "elapsed_s": trainer.elapsed, "best": trainer.best,
            "numpy_rng": numpy_state,
            "scaler": trainer.scaler.state_dict()}
    return save_state(state_path(model_path), optimizer=trainer.optimizer, tensors=tensors,
                      info=info)


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
    """Put what :func:`load_state` read back into ``trainer`` (the inverse of
    :func:`save_trainer_state`; the weights come from the model file)."""
    trainer.optimizer.load_state_dict(opt_state)
    match_moment_layout(trainer.optimizer)  # the saved moments are contiguous
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
