"""`torchrun -m napari_unet train` with 2 CPU processes (gloo, loopback) trains the same weights as
one process with the same global batch; a time budget ends both ranks on the same step."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_unet.cli import main
from napari_unet.core.io import load_model, read_metadata
from napari_unet.core.model import UNet
from napari_unet.core.training.loss import weighted_cross_entropy

# tiny network, drop-out off (its draws differ per rank), augmentation on (shared generators)
TINY = ["--depth", "2", "--base-channels", "4", "--dropout", "0", "--tile", "60",
        "--validate-every", "0", "--val-fraction", "0", "--device", "cpu", "--seed", "3",
        "--cpu-bf16", "off"]  # float32: the equalities below hold to 1e-5, bf16 sums do not
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(scope="module")
def data(tmp_path_factory, write_cell_folders):
    root = tmp_path_factory.mktemp("ddp")
    write_cell_folders(root)
    return root


def _torchrun(root, out, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for var in DIST_VARS:
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "napari_unet", "train", "--images", str(root / "img"), "--labels",
           str(root / "lab"), "--out", str(out), *TINY, *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[:6000]
    return proc


def test_two_processes_train_like_one_with_the_global_batch(data, tmp_path, monkeypatch):
    out = tmp_path / "ddp.safetensors"
    # SGD (the paper preset): unlike Adam its steps scale with the gradient, so a wrongly
    # normalised loss across processes shows
    sgd = ["--steps", "3", "--batch-size", "4", "--preset", "paper", "--lr", "0.1"]
    proc = _torchrun(data, out, *sgd)
    assert proc.stdout.count("model:") == 1  # rank 0 reports, rank 1 is silent
    assert "rank 0 of 2" in proc.stderr and "rank 1 of 2" not in proc.stderr
    assert "2 per process" in proc.stderr
    assert (tmp_path / "ddp.checkpoints" / "last.safetensors").is_file()

    for var in DIST_VARS:
        monkeypatch.delenv(var, raising=False)
    ref = tmp_path / "one.safetensors"
    assert main(["train", "--images", str(data / "img"), "--labels", str(data / "lab"),
                 "--out", str(ref), *TINY, *sgd]) == 0

    (m2, meta2), (m1, meta1) = load_model(out), load_model(ref)
    assert meta2["training"]["step"] == meta1["training"]["step"] == 3
    assert meta2["training"]["batch_size"] == 4
    sd1 = m1.state_dict()
    for name, p in m2.state_dict().items():
        torch.testing.assert_close(p, sd1[name], atol=1e-5, rtol=1e-5)
    # the run trained (weights left their seeded initial values) and logged the global loss
    torch.manual_seed(3)
    init = UNet(depth=2, base_channels=4, dropout=0.0).state_dict()
    moved = max(float((sd1[k] - init[k]).abs().max()) for k in init)
    assert moved > 1e-4
    np.testing.assert_allclose(meta2["history"][0]["loss"], meta1["history"][0]["loss"],
                               rtol=1e-4)


def test_time_limit_ends_both_ranks_on_the_same_step(data, tmp_path):
    # rank 0 decides and broadcasts; ranks ending on different steps would hang (timeout).
    # The budget is wall-clock from the start of the run (preparing the targets counts too),
    # so it leaves room for a few steps on a loaded machine
    out = tmp_path / "t.safetensors"
    proc = _torchrun(data, out, "--steps", "100000", "--time-limit", "5", "--batch-size", "2",
                     "--checkpoint-dir", str(tmp_path / "ck"))
    assert proc.stdout.count("model:") == 1 and "done after" in proc.stdout
    meta = read_metadata(out)
    assert 1 <= meta["training"]["step"] < 100000
    assert read_metadata(tmp_path / "ck" / "last.safetensors")["training"]["step"] == (
        meta["training"]["step"])


def test_global_batch_must_divide_among_processes(data, tmp_path, monkeypatch, capsys):
    for var, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(var, value)
    args = ["train", "--images", str(data / "img"), "--labels", str(data / "lab"),
            "--out", str(tmp_path / "m.safetensors"), *TINY, "--steps", "1"]
    assert main([*args, "--batch-size", "3"]) == 2
    err = capsys.readouterr().err
    assert "--batch-size" in err and "multiple of the 2 processes" in err and "got 3" in err
    assert "use a batch of 4" in err
    assert main([*args, "--preset", "paper"]) == 2  # the paper preset's batch of 1
    assert "use a batch of 2" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()


def test_summed_loss_gives_the_weighted_mean():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 4, 4, generator=g)
    target = torch.randint(0, 2, (3, 6, 6), generator=g)
    weights = torch.rand(3, 6, 6, generator=g)
    weights[0, :2] = 0
    s, n = weighted_cross_entropy(logits, target, weights, reduction="sum")
    torch.testing.assert_close(s / n, weighted_cross_entropy(logits, target, weights))
    # splitting the batch: the sums add up, the per-part means do not average to the whole
    parts = [weighted_cross_entropy(logits[i:i + 1], target[i:i + 1], weights[i:i + 1],
                                    reduction="sum") for i in range(3)]
    torch.testing.assert_close(sum(p[0] for p in parts) / sum(p[1] for p in parts), s / n)
    with pytest.raises(ValueError, match="reduction"):
        weighted_cross_entropy(logits, target, weights, reduction="none")
