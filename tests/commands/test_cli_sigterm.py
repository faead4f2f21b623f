"""SIGTERM mid-training (SLURM, docker stop, kill) leaves a checkpoint and the model, and
``--resume`` continues it to weights bit-identical to an uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from napari_unet.core.io import read_metadata

STEPS = 60


def _train(tmp_path, out, *extra):
    return [sys.executable, "-m", "napari_unet", "train", "--images", str(tmp_path / "img"),
            "--labels", str(tmp_path / "lab"), "--out", str(out), "--steps", str(STEPS),
            "--depth", "1", "--base-channels", "4", "--device", "cpu", "--batch-size", "2",
            "--validate-every", "5", "--val-fraction", "0.2", *extra]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_checkpoint_resumes_bit_identically(tmp_path, write_cell_folders):
    write_cell_folders(tmp_path)
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    import os

    env = {**os.environ, **env}
    stopped = tmp_path / "stopped.safetensors"
    ckpt = tmp_path / "stopped.checkpoints" / "last.safetensors"
    proc = subprocess.Popen(_train(tmp_path, stopped), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in out
    step = read_metadata(ckpt)["training"]["step"]
    assert 5 <= step < STEPS and read_metadata(stopped)["training"]["step"] == step

    resumed = subprocess.run(_train(tmp_path, stopped, "--resume", str(ckpt.parent)), env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    straight = tmp_path / "straight.safetensors"
    run = subprocess.run(_train(tmp_path, straight), env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    a, b = load_file(stopped), load_file(straight)
    assert read_metadata(stopped)["training"]["step"] == STEPS
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
