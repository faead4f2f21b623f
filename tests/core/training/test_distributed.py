"""DDP helpers: 2 CPU processes launched by torchrun on loopback train like one process with the
combined batch."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_unet.core.model import UNet
from napari_unet.core.training import distributed as D

STEPS, GLOBAL_BATCH, SIDE = 3, 4, 44

# the training loop shared by the workers and the single-process reference
LOOP = f"""
import torch
import torch.nn.functional as F
from napari_unet.core.training import distributed as D
from napari_unet.core.model import UNet


def train(device, perturb=False):
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=4, dropout=0.0)
    if perturb:  # DDP must broadcast rank 0's parameters to every rank
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)
    model = D.wrap_ddp(net, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    grads, losses = None, []
    for step in range({STEPS}):
        g = torch.Generator().manual_seed(100 + step)
        x = torch.rand({GLOBAL_BATCH}, 1, {SIDE}, {SIDE}, generator=g)
        target = torch.randint(0, 2, ({GLOBAL_BATCH}, 4, 4), generator=g)
        weights = torch.rand({GLOBAL_BATCH}, 4, 4, generator=g) + 0.1
        x, target, weights = D.shard(x), D.shard(target), D.shard(weights)
        logits = model(x.to(device))
        ce = F.cross_entropy(logits, target.to(device), reduction="none")
        loss = D.global_loss((ce * weights.to(device)).sum(), weights.sum())
        opt.zero_grad()
        loss.backward()
        if grads is None:
            grads = {{n: p.grad.detach().cpu().clone() for n, p in D.unwrap(model).named_parameters()}}
        opt.step()
        losses.append(D.all_reduce_mean(loss.detach()))  # = the global loss
    params = {{n: p.detach().cpu().clone() for n, p in D.unwrap(model).state_dict().items()}}
    return grads, params, losses
"""

WORKER = LOOP + """

import sys
import torch.distributed as dist

env, device = D.init_distributed(device="cpu")
t = torch.tensor([float(env.rank + 1)])
dist.all_reduce(t)
grads, params, losses = train(device, perturb=env.rank == 1)
torch.save({"allreduce": t, "rank": torch.tensor(env.rank), "world": torch.tensor(env.world_size),
            "main": torch.tensor(D.is_main_process()), "losses": torch.tensor(losses),
            "grads": grads, "params": params}, f"{sys.argv[1]}/rank{env.rank}.pt")
D.barrier()
D.cleanup()
"""


def _reference():
    namespace: dict = {}
    exec(compile(LOOP, "<loop>", "exec"), namespace)
    return namespace["train"](torch.device("cpu"))


def test_two_cpu_processes_match_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert float(r0["allreduce"]) == float(r1["allreduce"]) == 3.0  # 1 + 2
    assert (int(r0["rank"]), int(r1["rank"]), int(r0["world"])) == (0, 1, 2)
    assert bool(r0["main"]) and not bool(r1["main"])

    grads, params, losses = _reference()
    for name, g in grads.items():  # DDP gradient == gradient of the combined batch
        torch.testing.assert_close(r0["grads"][name], g, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(r1["grads"][name], g, atol=1e-6, rtol=1e-5)
    for name, p in params.items():  # and so are the weights after a few SGD steps
        torch.testing.assert_close(r0["params"][name], p, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(r1["params"][name], r0["params"][name], atol=0, rtol=0)
    np.testing.assert_allclose(r0["losses"].numpy(), losses, rtol=1e-5)


def test_single_process_fallbacks():
    env, dev = D.init_distributed(device="cpu", environ={})
    assert (env.rank, env.world_size, env.is_distributed, dev.type) == (0, 1, False, "cpu")
    net = UNet(depth=1, base_channels=2)
    assert D.wrap_ddp(net) is net and D.unwrap(net) is net
    assert D.is_main_process() and D.get_world_size() == 1 and D.get_rank() == 0
    assert D.all_reduce_mean(torch.tensor(2.0)) == 2.0
    D.barrier()
    D.cleanup()
    # the global loss of one process is the ordinary weighted mean
    logits = torch.randn(2, 2, 3, 3, requires_grad=True)
    target, w = torch.randint(0, 2, (2, 3, 3)), torch.rand(2, 3, 3)
    ce = F.cross_entropy(logits, target, reduction="none")
    torch.testing.assert_close(D.global_loss((ce * w).sum(), w.sum()), (ce * w).sum() / w.sum())


def test_env_parsing_and_sharding():
    e = D.dist_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                    "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"})
    assert (e.rank, e.world_size, e.local_rank, e.master_addr, e.master_port) == (
        3, 4, 1, "10.0.0.1", 29500)
    with pytest.raises(ValueError, match="RANK < WORLD_SIZE"):
        D.dist_env({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"})
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        D.dist_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="WORLD_SIZE: expected an integer"):
        D.dist_env({"WORLD_SIZE": "two"})
    x = torch.arange(12).reshape(6, 2)
    parts = [D.shard(x, rank=r, world_size=3) for r in range(3)]
    assert torch.equal(torch.cat(parts), x)
    with pytest.raises(ValueError, match="multiple of the 4 processes"):
        D.shard_range(6, rank=0, world_size=4)
    seeds = {D.sample_seed(0, s, i) for s in range(3) for i in range(4)}
    assert len(seeds) == 12 and D.sample_seed(0, 1, 2) == D.sample_seed(0, 1, 2)
