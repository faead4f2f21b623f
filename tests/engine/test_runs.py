"""Run folders (core/runs.py): round trip, hashes, atomic writes, listing, training from a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile

import napari_unet
from napari_unet.core.synthetic import synthetic_cells
from napari_unet.core.training import TrainingPair
from napari_unet.engine import runs
from napari_unet.engine import training as run_training


def _pairs():
    image, labels = synthetic_cells((40, 48), radius=6, seed=0)
    annotated = np.zeros(labels.shape, bool)
    annotated[:20] = True
    rgb = np.stack([image, image * 0.5, image * 0.2], axis=-1).astype(np.float32)
    return [TrainingPair(image, labels, annotated=annotated),
            TrainingPair(rgb, labels[::-1].copy(), channel_axis=-1)]


def test_round_trip_keeps_arrays_settings_and_record(tmp_path):
    run = runs.new_run_dir(tmp_path, name="my run/1")
    assert run.parent == tmp_path and "my-run-1" in run.name
    parent = tmp_path / "parent.safetensors"
    parent.write_bytes(b"weights")
    pairs = _pairs()
    runs.write_run(run, pairs, settings={"steps": 7, "lr": 1e-3}, seed=5, parent_model=parent,
                   sparse=False, names=["cells", "rgb cells"])
    back, settings, record = runs.read_run(run)
    assert settings == {"steps": 7, "lr": 1e-3}
    assert record["seed"] == 5 and record["status"] == "running" and record["sparse"] is False
    assert record["parent_model"] == str(parent.resolve())
    assert record["parent_sha256"] == runs.sha256_file(parent)
    assert record["versions"]["numpy"] == np.__version__ and "python" in record["versions"]
    # this project's version under its own distribution name, never another napari-unet's
    assert record["versions"]["napari-cell-unet"] == napari_unet.__version__
    assert [d["name"] for d in record["data"]] == ["cells", "rgb-cells"]
    assert record["data"][0]["image"] == "data/000_cells_image.tif"
    assert (run / "data" / "000_cells_annotated.tif").is_file()
    assert record["data"][1]["annotated"] is None
    for a, b in zip(pairs, back, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.channel_axis == b.channel_axis and b.image.dtype == a.image.dtype
    np.testing.assert_array_equal(back[0].annotated, pairs[0].annotated)
    assert back[1].annotated is None
    with pytest.raises(FileExistsError, match="already holds a run"):
        runs.write_run(run, pairs, settings={}, seed=0)


def test_hashes_are_of_the_files_and_a_changed_file_is_refused(tmp_path):
    run = runs.new_run_dir(tmp_path)
    runs.write_run(run, _pairs()[:1], settings={}, seed=0)
    record = json.loads((run / "run.json").read_text())
    labels_file = run / record["data"][0]["labels"]
    assert record["data"][0]["sha256"]["labels"] == runs.sha256_file(labels_file)
    changed = tifffile.imread(labels_file)
    changed[0, 0] += 1
    tifffile.imwrite(labels_file, changed)
    with pytest.raises(ValueError, match="does not match the sha256"):
        runs.read_run(run)
    assert runs.read_run(run, verify=False)[0][0].labels[0, 0] == changed[0, 0]


def test_status_and_metrics_writes_are_atomic(tmp_path, monkeypatch):
    run = runs.new_run_dir(tmp_path)
    runs.write_run(run, _pairs()[:1], settings={}, seed=0)
    runs.set_status(run, "done")
    with pytest.raises(ValueError, match="status"):
        runs.set_status(run, "finished")

    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)  # a crash between writing and renaming
    with pytest.raises(OSError):
        runs.set_status(run, "error")
    monkeypatch.undo()
    assert json.loads((run / "run.json").read_text())["status"] == "done"  # still whole
    runs.append_metrics(run, {"kind": "step", "step": 1, "loss": 0.5})
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "step", "st')  # a line cut short by a crash
    assert runs.read_metrics(run) == [{"kind": "step", "step": 1, "loss": 0.5}]


def test_list_runs_reports_steps_and_best_validation(tmp_path):
    first, second = runs.new_run_dir(tmp_path, name="a"), runs.new_run_dir(tmp_path, name="b")
    for run in (first, second):
        runs.write_run(run, _pairs()[:1], settings={}, seed=0)
    for step, rand, iou in ((10, 0.3, 0.5), (20, 0.1, 0.8), (30, 0.2, 0.7)):
        runs.append_metrics(first, {"kind": "step", "step": step})
        runs.append_metrics(first, {"kind": "validation", "step": step,
                                    "metrics": {"rand_error": rand, "iou": iou}})
    (tmp_path / "not-a-run").mkdir()
    infos = runs.list_runs(tmp_path)
    assert [i.path for i in infos] == [first, second]
    assert infos[0].steps == 30 and infos[0].best["step"] == 20 and infos[0].score == 0.8
    assert infos[1].steps == 0 and infos[1].score is None and infos[1].status == "running"
    assert "30 steps" in infos[0].describe() and "IoU 0.800" in infos[0].describe()
    assert [i.path for i in runs.list_runs(paths=[second])] == [second]


def test_default_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_UNET_RUNS", str(tmp_path / "r"))
    assert runs.new_run_dir().parent == tmp_path / "r"


def test_trainer_from_run_trains_into_the_folder_and_records_events(tmp_path):
    from napari_unet.core.io import load_model
    from napari_unet.core.training import TrainConfig

    run = runs.new_run_dir(tmp_path)
    config = TrainConfig(steps=4, depth=1, base_channels=4, validate_every=2, device="cpu",
                         checkpoint_dir="/elsewhere")
    runs.write_run(run, _pairs()[:1], settings=config, seed=3)
    trainer = run_training.trainer_from_run(run)
    assert trainer.config.seed == 3 and str(trainer.config.checkpoint_dir) == str(run)
    kinds = [e.kind for e in run_training.record_events(run, trainer.run())]
    assert kinds[-1] == "done"
    assert [e["kind"] for e in runs.read_metrics(run)] == kinds
    assert json.loads((run / "run.json").read_text())["status"] == "done"
    load_model(run / "last.safetensors")
    assert runs.run_model_path(run).name in ("best.safetensors", "last.safetensors")
    info = runs.list_runs(paths=[run])[0]
    assert info.steps == 4 and info.best is not None


def test_closing_recorded_events_early_keeps_a_checkpoint(tmp_path):
    from napari_unet.core.io import load_model
    from napari_unet.core.training import TrainConfig

    run = runs.new_run_dir(tmp_path)
    runs.write_run(run, _pairs()[:1], seed=0, settings=TrainConfig(
        steps=100, depth=1, base_channels=4, validate_every=0, device="cpu"))
    events = run_training.record_events(run, run_training.trainer_from_run(run).run())
    next(events)
    events.close()
    assert json.loads((run / "run.json").read_text())["status"] == "stopped"
    _, meta = load_model(run / "last.safetensors")
    assert meta["training"]["step"] == 1


def test_importing_runs_imports_no_torch():
    code = "import sys, napari_unet.engine.runs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ})
    assert out.stdout.strip() == "False"


def test_background_mask_and_sparse_flag_round_trip(tmp_path):
    image, labels = synthetic_cells((32, 32), radius=5, seed=1)
    background = np.zeros(labels.shape, bool)
    background[:4] = True
    pair = TrainingPair(image, labels, background=background, sparse=True)
    run = runs.new_run_dir(tmp_path)
    record = runs.write_run(run, [pair, TrainingPair(image, labels)], settings={}, seed=0)
    assert record["data"][0]["background"] == "data/000_pair0_background.tif"
    assert record["data"][1]["background"] is None
    back, _, _ = runs.read_run(run)
    np.testing.assert_array_equal(back[0].background, background)
    assert back[0].sparse is True and back[1].sparse is False
