"""A full disk during training (a file-size limit, ``ulimit -f``, in a child process): one line
that says what had no room and how much it needed, the model written since it fits, no partial
file left, and a rerun that works."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_unet.core.io import load_model
from napari_unet.core.synthetic import synthetic_cells

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="ulimit is a POSIX shell's")


def test_a_file_size_limit_during_a_checkpoint(tmp_path):
    for folder in ("img", "lab"):
        (tmp_path / folder).mkdir()
    image, labels = synthetic_cells((48, 48), radius=9, seed=0)
    tifffile.imwrite(tmp_path / "img" / "0.tif", (image * 1000).astype(np.uint16))
    tifffile.imwrite(tmp_path / "lab" / "0.tif", labels.astype(np.int32))
    argv = [sys.executable, "-m", "napari_unet.cli", "train", "--images", "img", "--labels",
            "lab", "--out", "m.safetensors", "--steps", "2", "--validate-every", "0",
            "--depth", "1", "--base-channels", "4", "--device", "cpu"]
    # the model (about 9 KB) fits in 16 KB, the checkpoint (weights, moments, random
    # states: about 35 KB) does not
    limited = subprocess.run(["bash", "-c", 'ulimit -f 16 && exec "$@"', "bash", *argv],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = limited.stderr.strip().splitlines()
    assert limited.returncode == 2, limited.stderr
    assert "Traceback" not in limited.stderr
    assert lines[-1].startswith("napari-unet train: error: no space left on "), lines[-1]
    assert "MB for last.state.safetensors" in lines[-1]
    assert "the model of step 2 is written to m.safetensors" in lines[-1]
    assert not list(tmp_path.rglob("*.tmp"))
    assert not (tmp_path / "m.checkpoints" / "last.safetensors").exists()  # no orphan
    load_model(tmp_path / "m.safetensors")
    again = subprocess.run([*argv, "--force"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "m.checkpoints" / "last.state.safetensors").is_file()
