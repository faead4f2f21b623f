"""A checkpoint is complete or absent, belongs to one run, and survives a full disk: the weights
live in the state file (one atomic write), a resume on other data or settings is refused, a
write that finds no room removes its partial file, and corrupted files are refused cleanly."""

from __future__ import annotations

import errno
import json
import shutil

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import napari_unet.core.io.model_file as model_file
from napari_unet.core.io import read_metadata, save_model
from napari_unet.core.synthetic import synthetic_cells
from napari_unet.core.training import TrainConfig, Trainer
from napari_unet.core.training import checkpoint as ckpt


@pytest.fixture(scope="module")
def pair():
    image, labels = synthetic_cells((48, 48), n_cells=2, radius=12, seed=3)
    return image, labels


def tiny(**changes) -> TrainConfig:
    base = dict(steps=4, depth=1, base_channels=4, dropout=0.2, validate_every=0,
                val_fraction=0.0, device="cpu", seed=1, history_every=1)
    base.update(changes)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def run(pair, tmp_path_factory):
    """A run stopped after 3 of 6 steps: its checkpoint folder."""
    folder = tmp_path_factory.mktemp("run") / "ckpt"
    trainer = Trainer([pair], tiny(steps=6, checkpoint_dir=folder))
    for event in trainer.run():
        if event.kind == "step" and event.step == 3:
            trainer.request_stop()
    return folder


def test_the_state_file_is_the_checkpoint(pair, run, tmp_path):
    """The model file replaced by an older one (a crash between the two writes): the resume
    takes the state file's weights and step, those of the stopped run."""
    folder = tmp_path / "ckpt"
    shutil.copytree(run, folder)
    torch.manual_seed(5)
    older = Trainer([pair], tiny(steps=1))
    list(older.run())
    older.save(folder / "last.safetensors")
    assert read_metadata(folder / "last.safetensors")["training"]["step"] == 1
    resumed = Trainer([pair], tiny(steps=6, checkpoint_dir=folder), resume=folder)
    model, _meta, _state = ckpt.load_checkpoint(run)
    assert resumed.step == 3
    for key, value in model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key].cpu(), value, rtol=0, atol=0)


def test_an_earlier_versions_mismatched_pair_is_refused(pair, run, tmp_path):
    """A state file without weights (the earlier format) beside the model of another step."""
    folder = tmp_path / "ckpt"
    shutil.copytree(run, folder)
    _opt_state, rng, info = ckpt.load_state(folder / "last.state.safetensors")
    model, meta = info.pop("model")
    trainer = Trainer([pair], tiny(steps=6), resume=run)
    ckpt.save_state(folder / "last.state.safetensors", optimizer=trainer.optimizer,
                    tensors=rng, info={k: v for k, v in info.items() if k != "format"})
    meta = dict(meta, training=dict(meta["training"], step=2))
    from napari_unet.core.model import UNet

    net = UNet(**meta["architecture"])
    net.load_state_dict(model)
    save_model(net, folder / "last.safetensors", **meta)
    with pytest.raises(ValueError, match=r"the weights \(step 2\) and last.state.safetensors "
                                         r"\(step 3\) are not one checkpoint"):
        Trainer([pair], tiny(steps=6), resume=folder)


@pytest.mark.parametrize(("change", "differs"), [
    ("data", "training pair 1 of 1 (other pixels or labels)"),
    ("settings", "lr None -> 0.01"),
])
def test_a_resume_of_another_run_is_refused(pair, run, change, differs):
    image, labels = pair
    cfg = tiny(steps=6)
    if change == "data":
        image = np.flip(image, axis=1).copy()
    else:
        cfg = tiny(steps=6, lr=0.01)
    with pytest.raises(ValueError, match="belongs to another run") as err:
        Trainer([(image, labels)], cfg, resume=run)
    assert differs in str(err.value) and "--force" in str(err.value)
    assert Trainer([(image, labels)], cfg, resume=run, force_resume=True).step == 3


def test_a_full_disk_leaves_the_last_complete_checkpoint(pair, tmp_path, monkeypatch):
    """The second checkpoint finds no room: no partial file stays, the first checkpoint is
    intact, the error says how much was needed, and the run resumes from step 2 once there is
    room."""
    folder = tmp_path / "ckpt"
    cfg = tiny(steps=6, checkpoint_dir=folder, checkpoint_every=2)
    real_open, writes = open, []

    def full_disk_open(path, mode="r", *args, **kwargs):
        if "w" in mode and str(path).endswith(".state.safetensors.tmp"):
            writes.append(path)
            if len(writes) == 2:  # the file is created, then the disk is full
                real_open(path, mode).close()
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk_open)
    trainer = Trainer([pair], cfg)
    with pytest.raises(OSError) as err:
        list(trainer.run())
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC
    assert str(err.value).startswith(f"[Errno {errno.ENOSPC}] no space left on ")
    assert "(needed ~" in str(err.value) and "MB for last.state.safetensors" in str(err.value)
    assert sorted(p.name for p in folder.iterdir()) == ["last.safetensors",
                                                        "last.state.safetensors"]
    resumed = Trainer([pair], cfg, resume=folder)
    assert resumed.step == 2
    assert [e.step for e in resumed.run() if e.kind == "step"] == [3, 4, 5, 6]


def test_the_memory_check_counts_what_a_checkpoint_builds(tmp_path, monkeypatch):
    """A checkpoint is built in memory before its atomic write: the state file's bytes, and
    the CPU copies of the weights and optimiser moments that fill it (as many bytes again).
    The training estimate holds them on top of a step, so a budget that holds a step but not
    the checkpoint is refused before the run (a network whose weights outweigh its maps: 32
    base channels at the smallest tile)."""
    from napari_unet.core.model import (
        UNet,
        check_memory,
        estimate_training_bytes,
        valid_input_shape,
    )

    arch = dict(in_channels=1, num_classes=2, depth=3, base_channels=32)
    net = UNet(**arch)
    optimizer = torch.optim.AdamW(net.parameters())  # the CPU recipe's: two moments
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    state = ckpt.save_state(tmp_path / "last.state.safetensors", optimizer=optimizer,
                            tensors={}, info={}, weights=net.state_dict(), model_meta={})
    built = 2 * state.stat().st_size
    run = dict(arch, tile=int(valid_input_shape(1, 3)[0]), batch_size=1)
    step = estimate_training_bytes(**run, checkpoint=False)
    assert estimate_training_bytes(**run) - step >= built
    monkeypatch.setenv("NAPARI_UNET_MEMORY_LIMIT", str(int((step + built // 2) / 0.85)))
    with pytest.raises(ValueError, match=r"^memory: training a U-Net of depth 3, base 32"):
        check_memory(**run)


def test_model_files_store_the_checkpoint_folder_relative_to_themselves(tmp_path):
    meta = {"training": {"checkpoint_dir": str(tmp_path / "a" / "m.checkpoints")}}
    rel = ckpt.relative_paths(meta, tmp_path / "a" / "m.safetensors")
    assert rel["training"]["checkpoint_dir"] == "m.checkpoints"
    moved = tmp_path / "b" / "m.safetensors"
    assert ckpt.checkpoint_dir_of(rel, moved)[0] == (tmp_path / "b" / "m.checkpoints").resolve()


@pytest.fixture(scope="module")
def state_bytes(run):
    return (run / "last.state.safetensors").read_bytes()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_corrupted_checkpoints(pair, run, state_bytes, tmp_path, data):
    """A state file with bytes overwritten at random offsets, or cut short: the resume is
    refused with a ValueError/OSError naming the file, or (a change that does not change what
    it holds, e.g. a space of the header's padding) resumes the very checkpoint. Never
    another exception, never another checkpoint."""
    raw = bytearray(state_bytes)
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        for _ in range(data.draw(st.integers(1, 8), label="changes")):
            raw[data.draw(st.integers(0, len(raw) - 1), label="offset")] = data.draw(
                st.integers(0, 255), label="byte")
    folder = tmp_path / "fuzz"
    folder.mkdir(exist_ok=True)
    (folder / "last.state.safetensors").write_bytes(bytes(raw))
    try:
        trainer = Trainer([pair], tiny(steps=6), resume=folder)
    except (ValueError, OSError) as err:
        assert "last.state.safetensors" in str(err) or "resume:" in str(err), err
        return
    original, _meta, _state = ckpt.load_checkpoint(run)
    assert trainer.step == 3
    for key, value in original.state_dict().items():
        torch.testing.assert_close(trainer.model.state_dict()[key].cpu(), value, rtol=0, atol=0)


def test_the_state_header_names_its_format(run):
    header = model_file.read_header(run / "last.state.safetensors")["__metadata__"]
    assert header["format"] == ckpt.FORMAT
    assert json.loads(header["info"])["identity"]["settings"]["depth"] == 1
