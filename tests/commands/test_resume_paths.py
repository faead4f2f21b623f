"""A run folder can be moved and resumed from anywhere: the model file stores its checkpoint
folder relative to itself."""

from __future__ import annotations

import shutil

import numpy as np
import tifffile

from napari_unet.cli import main
from napari_unet.core.io import read_metadata
from napari_unet.core.synthetic import synthetic_cells

TINY = ["--depth", "1", "--base-channels", "4", "--device", "cpu"]


def test_a_moved_run_folder_resumes_from_another_folder(tmp_path, monkeypatch):
    for folder in ("img", "lab"):
        (tmp_path / folder).mkdir()
    image, labels = synthetic_cells((48, 48), radius=9, seed=0)
    tifffile.imwrite(tmp_path / "img" / "0.tif", (image * 1000).astype(np.uint16))
    tifffile.imwrite(tmp_path / "lab" / "0.tif", labels.astype(np.int32))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--images", "img", "--labels", "lab", "--out", "a/m.safetensors",
                 "--steps", "2", *TINY]) == 0
    assert read_metadata("a/m.safetensors")["training"]["checkpoint_dir"] == "m.checkpoints"
    (tmp_path / "elsewhere").mkdir()
    shutil.move(tmp_path / "a", tmp_path / "elsewhere" / "b")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["train", "--images", "../img", "--labels", "../lab", "--out", "b/m.safetensors",
                 "--resume", "b/m.checkpoints", "--steps", "2", *TINY]) == 0
    assert read_metadata("b/m.safetensors")["training"]["step"] == 2


def test_a_resume_plans_with_the_runs_own_settings(tmp_path, monkeypatch):
    """A resume that gives no setting plans what its run planned: a budget that gives a new
    run the CPU recipe's long-run rate (--time-limit 900: 1e-3) keeps the run's 2e-3, so it
    is not refused as another run."""
    from napari_unet.cli import build_parser
    from napari_unet.commands.train import build_config

    for folder in ("img", "lab"):
        (tmp_path / folder).mkdir()
    image, labels = synthetic_cells((48, 48), radius=9, seed=0)
    tifffile.imwrite(tmp_path / "img" / "0.tif", (image * 1000).astype(np.uint16))
    tifffile.imwrite(tmp_path / "lab" / "0.tif", labels.astype(np.int32))
    monkeypatch.chdir(tmp_path)
    data = ["train", "--images", "img", "--labels", "lab", "--out", "m.safetensors"]
    assert main([*data, "--steps", "2", *TINY]) == 0
    longer = [*data, "--time-limit", "900", "--device", "cpu"]
    assert build_config(build_parser().parse_args(longer)).lr == 1e-3  # a new run
    resumed = build_config(build_parser().parse_args([*longer, "--resume", "m.checkpoints"]))
    assert (resumed.lr, resumed.depth, resumed.base_channels) == (2e-3, 1, 4)
    assert resumed.time_limit == 900 and resumed.steps is None  # the budget is the resume's
