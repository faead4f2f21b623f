"""Never worse after a round: a fine-tuning keeps the better of the model it started from and
the one it trained, judged on the validation band, and says which and why."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from napari_unet.core.augment import AugmentConfig
from napari_unet.core.io import load_model, read_metadata, save_model
from napari_unet.core.synthetic import synthetic_cells
from napari_unet.core.training import TrainConfig, Trainer, TrainingPair
from napari_unet.core.training.keep import PREVIOUS, TRAINED, keep_better
from napari_unet.engine import runs
from napari_unet.engine import training as run_training


def _config(**changes) -> TrainConfig:
    base = dict(steps=80, depth=2, base_channels=8, dropout=0.0, lr=5e-3, batch_size=2,
                validate_every=80, val_fraction=0.25, device="cpu", seed=0,
                augment=AugmentConfig.none())
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def cells():
    return synthetic_cells((64, 64), radius=8, seed=0)


@pytest.fixture(scope="module")
def parent(cells, tmp_path_factory):
    """A model that segments the synthetic cells (80 steps: validation F1 1.0 on the band of
    the rounds below), saved: the round's start."""
    trainer = Trainer([cells], _config(validate_every=0, val_fraction=0.0))
    list(trainer.run())
    return trainer.save(tmp_path_factory.mktemp("parent") / "parent.safetensors")


def _unlearn(self, sampler):
    """A round that unlearns: every weight 0 and the last layer's bias says background, so the
    trained model finds no cell."""
    with torch.no_grad():
        for p in self.model.parameters():
            p.zero_()
        last = [m for m in self.model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.bias.copy_(torch.tensor([4.0, -4.0]))
    return 0.5, self.lr


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def test_the_better_model_is_kept_and_a_tie_keeps_the_trained_one():
    good = {"chosen_on": {"instance_f1": 0.91, "rand_error": 0.05}}
    bad = {"chosen_on": {"instance_f1": 0.88, "rand_error": 0.05}}
    assert keep_better(bad, good).kept == PREVIOUS
    assert keep_better(bad, good).message == (
        "kept the previous model: validation F1 0.910 → 0.880")
    assert keep_better(good, bad).kept == TRAINED
    assert keep_better(good, bad).message.startswith("kept the trained model: validation F1 "
                                                     "0.880 → 0.910")
    assert keep_better(good, good).kept == TRAINED
    same_f1 = {"chosen_on": {"instance_f1": 0.91, "rand_error": 0.02}}
    choice = keep_better(good, same_f1)  # F1 equal: the Rand error decides, and is shown
    assert choice.kept == PREVIOUS and "Rand error 0.0200 → 0.0500" in choice.message
    nothing = keep_better(None, good, reason="no time left")
    assert nothing.kept == TRAINED and not nothing.compared and "no time left" in nothing.message


def test_on_a_band_of_a_few_cells_the_loss_decides_not_the_f1():
    """Both inherited their post-processing (a band of fewer than MIN_CHOICE_CELLS cells):
    one cell more or less moves the F1 by a third there, so the band's loss decides."""
    def few(f1, loss):
        return {"inherited": True, "chosen_on": {"instance_f1": f1, "rand_error": 0.1,
                                                 "loss": loss}}

    choice = keep_better(few(0.5, 0.20), few(0.75, 0.25))
    assert choice.kept == TRAINED
    assert choice.message == ("kept the trained model: validation loss 0.2500 → 0.2000 "
                              "(a band of a few cells)")
    assert keep_better(few(0.75, 0.25), few(0.5, 0.20)).kept == PREVIOUS
    assert keep_better(few(0.5, 0.2), few(0.5, 0.2)).kept == TRAINED  # a tie
    # a band large enough to choose on is judged by F1 minus Rand error, whatever the loss
    chosen = {"chosen_on": {"instance_f1": 0.5, "rand_error": 0.1, "loss": 0.20}}
    assert keep_better(chosen, few(0.75, 0.25)).kept == PREVIOUS


def test_a_round_that_scores_worse_keeps_the_previous_model(cells, parent, tmp_path,
                                                            monkeypatch):
    previous, _ = load_model(parent)
    monkeypatch.setattr(Trainer, "train_step", _unlearn)
    tuned = Trainer([cells], _config(steps=4, validate_every=2, checkpoint_dir=tmp_path),
                    init_model=parent)
    events = list(tuned.run())
    assert [e.kind for e in events][-2:] == ["kept", "done"]
    kept = events[-2]
    assert kept.metrics["kept"] == PREVIOUS
    assert kept.message.startswith("kept the previous model: validation F1 ")
    assert kept.metrics["previous"]["instance_f1"] > kept.metrics["trained"]["instance_f1"]
    assert _same_weights(tuned.model, previous)  # the round is undone
    meta = read_metadata(tuned.save(tmp_path / "model.safetensors"))
    assert meta["kept"]["kept"] == PREVIOUS and meta["kept"]["message"] == kept.message
    assert meta["postprocess"]["chosen_on"] == kept.metrics["previous"]  # the previous' choice
    # the checkpoint keeps what was trained (what --resume continues): the zeroed weights,
    # which loading refuses as a broken model, so the file's tensors are read as they are
    last = load_file(tmp_path / "last.safetensors")
    assert not torch.any(last["down.0.0.weight"])


def test_a_round_that_scores_better_keeps_what_it_trained(cells, tmp_path):
    start = Trainer([cells], _config(steps=1, validate_every=0))
    list(start.run())
    path = start.save(tmp_path / "start.safetensors")
    tuned = Trainer([cells], _config(), init_model=path)
    events = list(tuned.run())
    kept = next(e for e in events if e.kind == "kept")
    assert kept.metrics["kept"] == TRAINED and kept.message.startswith("kept the trained")
    assert kept.metrics["trained"]["instance_f1"] >= kept.metrics["previous"]["instance_f1"]
    assert not _same_weights(tuned.model, start.model)


def test_without_a_band_the_trained_model_is_kept_and_the_line_says_why(cells, parent):
    tuned = Trainer([cells], _config(steps=2, validate_every=0, val_fraction=0.0),
                    init_model=parent)
    kept = next(e for e in tuned.run() if e.kind == "kept")
    assert kept.metrics["kept"] == TRAINED and kept.metrics["previous"] is None
    assert "not compared" in kept.message and "no validation band" in kept.message


def test_a_fine_tuning_without_a_choice_keeps_the_post_processing_of_its_model(cells, tmp_path):
    # a round without the time or the band to choose: the model's own settings (test-time
    # augmentation and confident cores), never the defaults
    model, meta = load_model(Trainer([cells], _config(steps=1, validate_every=0)).save(
        tmp_path / "m.safetensors"))
    stored = {"threshold": 0.65, "seeds": 0.85, "min_size": 25, "tta": True}
    path = save_model(model, tmp_path / "chosen.safetensors", **{**meta, "postprocess": stored})
    tuned = Trainer([cells], _config(steps=2, validate_every=0, val_fraction=0.0),
                    init_model=path)
    list(tuned.run())
    assert tuned.metadata()["postprocess"] == stored
    assert "postprocess" not in Trainer([cells], _config(steps=1)).metadata()  # a new network


def test_the_run_folder_records_the_choice(cells, parent, tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "train_step", _unlearn)
    run = runs.new_run_dir(tmp_path, name="round")
    config = _config(steps=4, validate_every=2)
    runs.write_run(run, [TrainingPair(*cells)], settings=config, seed=0,
                   parent_model=parent)
    trainer = run_training.trainer_from_run(run)
    list(run_training.record_events(run, trainer.run()))
    trainer.save(run / "model.safetensors")
    kept = [e for e in runs.read_metrics(run) if e["kind"] == "kept"]
    assert len(kept) == 1 and kept[0]["metrics"]["kept"] == PREVIOUS
    assert kept[0]["message"].startswith("kept the previous model: validation F1 ")
    assert read_metadata(run / "model.safetensors")["kept"]["message"] == kept[0]["message"]


def _with_postprocess(path, stored, out):
    model, meta = load_model(path)
    return save_model(model, out, **{**meta, "postprocess": stored})


STORED = {"threshold": 0.6, "seeds": 0.8, "min_size": 25, "regrow": 2, "tta": False}


def test_a_round_on_a_few_cells_keeps_the_post_processing_it_started_with(cells, parent,
                                                                          tmp_path):
    """A band of a few cells (fewer than MIN_CHOICE_CELLS) chooses nothing: the model
    delivered, trained or previous, has the post-processing its parent stored, and both are
    compared with it. (Which of the two wins 4 steps on depends on the CPU's arithmetic: the
    trained one on AMD EPYC, the previous one on an Intel Xeon.)"""
    path = _with_postprocess(parent, STORED, tmp_path / "p.safetensors")
    tuned = Trainer([cells], _config(steps=4, validate_every=2), init_model=path)
    kept = next(e for e in tuned.run() if e.kind == "kept")
    assert kept.metrics["kept"] in (TRAINED, PREVIOUS)
    assert kept.metrics["previous"] is not None and kept.metrics["trained"] is not None
    pp = tuned.metadata()["postprocess"]
    assert pp["inherited"] is True and {k: pp[k] for k in STORED} == STORED


def test_the_previous_model_kept_is_the_previous_model(cells, parent, tmp_path, monkeypatch):
    """A round that unlearns keeps the previous model with the post-processing it had, not
    one chosen again on the round's band (which made a kept model score 0.646 instead of
    0.897 on unseen images)."""
    path = _with_postprocess(parent, STORED, tmp_path / "p.safetensors")
    monkeypatch.setattr(Trainer, "train_step", _unlearn)
    tuned = Trainer([cells], _config(steps=4, validate_every=2), init_model=path)
    kept = next(e for e in tuned.run() if e.kind == "kept")
    assert kept.metrics["kept"] == PREVIOUS
    pp = tuned.metadata()["postprocess"]
    assert {k: pp[k] for k in STORED} == STORED


def test_a_band_of_enough_cells_chooses_again(cells, parent, tmp_path, monkeypatch):
    import napari_unet.core.training.choice as choice

    monkeypatch.setattr(choice, "MIN_CHOICE_CELLS", 1)
    path = _with_postprocess(parent, STORED, tmp_path / "p.safetensors")
    tuned = Trainer([cells], _config(steps=4, validate_every=2), init_model=path)
    list(tuned.run())
    assert "inherited" not in tuned.metadata()["postprocess"]
