"""Multi-process training helpers for PyTorch's DistributedDataParallel, launched by ``torchrun``.

``torchrun --nproc_per_node=N ...`` starts N processes and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each; :func:`init_distributed` reads them,
joins the process group (NCCL on CUDA, one GPU per process chosen by the local rank; gloo on the
CPU) and returns the process's device. Without those variables everything here degrades to a
single process: :func:`wrap_ddp` returns the model unchanged, :func:`is_main_process` is True.

Equal results to one process with the same global batch
    The global batch of ``world_size × local_batch`` samples is the one a single process would
    draw: every rank draws it with the same seeded RNG (or derives one seed per global sample with
    :func:`sample_seed`) and keeps its own contiguous block (:func:`shard`), so rank-ordered
    concatenation of the local batches is the single-process batch. DDP *averages* gradients over
    ranks, which equals the gradient of the global loss when each rank's loss is its part of that
    global loss times ``world_size``: :func:`global_loss` does this for a loss normalised by a
    data-dependent sum (the paper's weighted cross-entropy divides by Σ w over the batch). Drop-out
    draws differ per rank (equal only in distribution).

Only rank 0 should write checkpoints, logs and progress (:func:`is_main_process`).
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistEnv",
    "all_reduce_mean",
    "barrier",
    "broadcast_control",
    "cleanup",
    "dist_env",
    "get_rank",
    "get_world_size",
    "global_loss",
    "init_distributed",
    "is_main_process",
    "sample_seed",
    "shard",
    "shard_range",
    "unwrap",
    "wrap_ddp",
]

logger = logging.getLogger(__name__)

_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in a ``torchrun`` launch (rank 0 of 1 when not launched)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _int_var(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"environment variable {name}: expected an integer (set by torchrun), got {raw!r}"
        ) from None


def dist_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Read ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``.

    Examples
    --------
    >>> dist_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
    ...           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}).rank
    1
    >>> dist_env({}).is_distributed
    False
    """
    env = os.environ if environ is None else environ
    world = _int_var(env, "WORLD_SIZE", 1)
    rank = _int_var(env, "RANK", 0)
    local = _int_var(env, "LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(
            f"environment: expected 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0, got RANK={rank}, "
            f"WORLD_SIZE={world}, LOCAL_RANK={local}; launch with torchrun --nproc_per_node=N"
        )
    port = env.get("MASTER_PORT")
    if world > 1 and (not env.get("MASTER_ADDR") or not port):
        raise ValueError(
            f"environment: WORLD_SIZE={world} but MASTER_ADDR/MASTER_PORT are not set; launch "
            "with torchrun (which sets them) or set them to the address of rank 0"
        )
    return DistEnv(rank, world, local, env.get("MASTER_ADDR"), _int_var(env, "MASTER_PORT", 0) or None)


def init_distributed(
    *,
    device: str | torch.device | None = "auto",
    backend: str | None = None,
    timeout_s: float = 1800.0,
    environ: Mapping[str, str] | None = None,
) -> tuple[DistEnv, torch.device]:
    """Join the ``torchrun`` process group (if launched by it) and pick this process's device.

    Parameters
    ----------
    device : {"auto", "cuda", "cpu", ...}
        ``"auto"``: ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU (in a distributed
        run; a single process uses :func:`napari_unet.core.device.pick_device`).
    backend : {"nccl", "gloo"}, optional
        Default: ``"nccl"`` on CUDA, ``"gloo"`` otherwise.
    timeout_s : float
        How long collective operations wait for the other processes.

    Returns
    -------
    (DistEnv, torch.device)

    Examples
    --------
    >>> env, dev = init_distributed(device="cpu", environ={})
    >>> env.world_size, dev.type
    (1, 'cpu')
    """
    env = dist_env(environ)
    if not env.is_distributed:
        from napari_unet.core.device import pick_device

        return env, pick_device(device)
    requested = "auto" if device is None else str(device)
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        n = torch.cuda.device_count()
        if n == 0:
            raise ValueError("device: 'cuda' requested but PyTorch sees no CUDA device")
        if env.local_rank >= n:
            raise ValueError(
                f"LOCAL_RANK={env.local_rank} but this machine has {n} CUDA device(s); start at "
                f"most --nproc_per_node={n} processes per machine"
            )
        dev = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(requested)
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(
            backend,
            init_method="env://",
            rank=env.rank,
            world_size=env.world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    logger.info("rank %d/%d (local %d) on %s with %s", env.rank, env.world_size,
                env.local_rank, dev, backend)
    return env, dev


def get_rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one that writes files and progress."""
    return get_rank() == 0


def wrap_ddp(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """``DistributedDataParallel(model)`` in a process group, ``model`` unchanged otherwise.

    The model is moved to ``device``; DDP broadcasts rank 0's parameters to all ranks.

    Examples
    --------
    >>> net = nn.Linear(2, 2)
    >>> wrap_ddp(net) is net
    True
    """
    if device is not None:
        model = model.to(device)
    if get_world_size() == 1:
        return model
    dev = next(model.parameters()).device
    ids = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (for saving: its ``state_dict`` has no ``module.``)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def shard_range(global_batch: int, rank: int | None = None, world_size: int | None = None) -> range:
    """Indices of the global batch this rank trains on: a contiguous block of equal size.

    Examples
    --------
    >>> list(shard_range(6, rank=1, world_size=2))
    [3, 4, 5]
    """
    rank = get_rank() if rank is None else rank
    world = get_world_size() if world_size is None else world_size
    if global_batch % world:
        raise ValueError(
            f"global_batch: expected a multiple of the {world} processes, got {global_batch}; "
            f"use a batch size of {world * max(1, global_batch // world)}"
        )
    local = global_batch // world
    return range(rank * local, (rank + 1) * local)


def shard(x: torch.Tensor | np.ndarray, rank: int | None = None, world_size: int | None = None):
    """This rank's block of a global batch (first axis); concatenation in rank order = ``x``.

    Examples
    --------
    >>> shard(torch.arange(4), rank=0, world_size=2).tolist()
    [0, 1]
    """
    r = shard_range(len(x), rank, world_size)
    return x[r.start : r.stop]


def sample_seed(seed: int, step: int, index: int) -> int:
    """A seed for global sample ``index`` of training step ``step``, the same on every rank.

    Lets each rank draw only its own samples yet get the single-process batch.

    Examples
    --------
    >>> sample_seed(0, 5, 1) == sample_seed(0, 5, 1) != sample_seed(0, 5, 2)
    True
    """
    ss = np.random.SeedSequence([int(seed), int(step), int(index)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def global_loss(local_sum: torch.Tensor, local_norm: torch.Tensor | float) -> torch.Tensor:
    """The loss to back-propagate so that DDP's averaged gradient is that of the global loss.

    For a loss ``Σ_all l / Σ_all n`` (e.g. weighted cross-entropy: ``l = w·ce``, ``n = w``),
    each rank passes its own ``Σ l`` (with gradient) and ``Σ n``; the result is
    ``world_size · Σ_local l / Σ_all n``. In one process it is simply ``Σ l / Σ n``.

    Examples
    --------
    >>> float(global_loss(torch.tensor(3.0), 2.0))
    1.5
    """
    norm = torch.as_tensor(local_norm, dtype=torch.float32, device=local_sum.device).detach()
    world = get_world_size()
    if world > 1:
        norm = norm.clone()
        dist.all_reduce(norm, op=dist.ReduceOp.SUM)
    return local_sum * world / norm.clamp_min(1e-12)


def all_reduce_mean(value: float | torch.Tensor) -> float:
    """Mean of a scalar over all ranks (for logging a loss or a metric).

    Examples
    --------
    >>> all_reduce_mean(2.5)
    2.5
    """
    if get_world_size() == 1:
        return float(value)
    t = torch.as_tensor(float(value), dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t) / get_world_size()


def _collective_device() -> torch.device | None:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None


def broadcast_control(stop: bool, elapsed: float) -> tuple[bool, float]:
    """Rank 0's stop decision and elapsed training time, on every rank.

    Call it on every rank before each step: the ranks then end on the same step (on a stop
    request or a time budget, decided by rank 0's clock) and follow the same learning-rate
    schedule; ranks that decided differently would wait for each other forever.

    Examples
    --------
    >>> broadcast_control(False, 1.5)
    (False, 1.5)
    """
    if get_world_size() == 1:
        return bool(stop), float(elapsed)
    t = torch.tensor([float(bool(stop)), float(elapsed)], dtype=torch.float64,
                     device=_collective_device())
    dist.broadcast(t, src=0)
    return bool(t[0].item() > 0), float(t[1].item())


def barrier() -> None:
    """Wait for all ranks (no-op in a single process)."""
    if get_world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (no-op when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
