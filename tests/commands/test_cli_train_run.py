"""`napari-unet train --run DIR`: train from a run folder as the Train widget writes it."""

from __future__ import annotations

import json

import pytest

from napari_unet.cli import main
from napari_unet.core.io import load_model, read_metadata, save_model
from napari_unet.core.model import UNet
from napari_unet.core.synthetic import synthetic_cells
from napari_unet.core.training import TrainConfig, TrainingPair
from napari_unet.engine import runs


@pytest.fixture
def run_dir(tmp_path):
    image, labels = synthetic_cells((48, 48), radius=9, seed=0)
    parent = save_model(UNet(depth=1, base_channels=4), tmp_path / "parent.safetensors")
    run = runs.new_run_dir(tmp_path / "runs", name="gui")
    config = TrainConfig(steps=3, depth=2, base_channels=8, validate_every=2, device="cpu",
                         seed=4)
    runs.write_run(run, [TrainingPair(image, labels)], settings=config, seed=4,
                   parent_model=parent)
    return run


def test_train_from_a_run_folder_writes_into_it(run_dir, capsys):
    assert main(["train", "--run", str(run_dir)]) == 0
    meta = read_metadata(run_dir / "model.safetensors")
    assert meta["training"]["step"] == 3 and meta["training"]["seed"] == 4
    assert meta["architecture"]["depth"] == 1  # the parent model's, fine-tuned
    assert (run_dir / "last.safetensors").is_file() and (run_dir / "best.safetensors").is_file()
    load_model(run_dir / "last.safetensors")
    kinds = [e["kind"] for e in runs.read_metrics(run_dir)]
    assert kinds.count("step") == 3 and kinds[-1] == "done" and "validation" in kinds
    assert json.loads((run_dir / "run.json").read_text())["status"] == "done"
    assert "checkpoints: " + str(run_dir) in capsys.readouterr().out


def test_run_errors_are_one_line(run_dir, tmp_path, capsys):
    assert main(["train", "--run", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["train", "--run", str(run_dir), "--images", str(tmp_path)]) == 2
    assert "drop --images" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "--run DIR" in capsys.readouterr().err
    labels = next((run_dir / "data").glob("*_labels.tif"))
    labels.write_bytes(labels.read_bytes()[:-1] + b"\x01")
    assert main(["train", "--run", str(run_dir)]) == 2
    assert "sha256" in capsys.readouterr().err
