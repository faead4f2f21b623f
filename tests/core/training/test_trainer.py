"""The training engine: learning, stop/resume, pause, checkpoints, the loss."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_unet.core.augment import AugmentConfig
from napari_unet.core.io import load_model, read_metadata, save_model
from napari_unet.core.metrics import foreground_iou
from napari_unet.core.predict import PostprocessSettings
from napari_unet.core.synthetic import synthetic_cells
from napari_unet.core.training import (
    TrainConfig,
    Trainer,
    TrainingPair,
    config_for_device,
    prepare_pairs,
    split_validation,
)
from napari_unet.core.training.choice import THRESHOLDS
from napari_unet.core.training.loss import weighted_cross_entropy
from napari_unet.core.training.validation import region_probabilities


@pytest.fixture(scope="module")
def two_cells():
    image, labels = synthetic_cells((48, 48), n_cells=2, radius=12, seed=3)
    assert labels.max() == 2
    return image, labels


def tiny(**changes) -> TrainConfig:
    base = dict(steps=4, depth=1, base_channels=4, dropout=0.2, validate_every=0,
                val_fraction=0.0, device="cpu", seed=1, history_every=1)
    base.update(changes)
    return TrainConfig(**base)


def test_tiny_network_learns_two_cells(two_cells):
    image, labels = two_cells
    cfg = TrainConfig(steps=40, depth=2, base_channels=8, dropout=0.0, lr=5e-3, batch_size=2,
                      validate_every=0, val_fraction=0, device="cpu",
                      augment=AugmentConfig.none())
    trainer = Trainer([(image, labels)], cfg)
    events = list(trainer.run())
    assert events[-1].kind == "done" and events[-1].step == 40
    model, meta = trainer.snapshot()
    prep = prepare_pairs([TrainingPair(image, labels)], pad=trainer.tile)[0]
    prob = region_probabilities(model, prep, (slice(0, 48), slice(0, 48)), tile=trainer.tile)
    assert foreground_iou(prob.argmax(0), labels) > 0.9
    assert meta["training"]["step"] == 40 and len(meta["history"]) >= 4


def test_stop_and_resume_continue_the_same_run(two_cells, tmp_path):
    pairs = [two_cells]
    full = Trainer(pairs, tiny(steps=6))
    list(full.run())

    cfg = tiny(steps=6, checkpoint_dir=tmp_path / "ckpt")
    first = Trainer(pairs, cfg)
    kinds = []
    for event in first.run():
        kinds.append(event.kind)
        if event.kind == "step" and event.step == 3:
            first.request_stop()
    assert kinds[-1] == "stopped" and first.step == 3
    assert read_metadata(tmp_path / "ckpt" / "last.safetensors")["training"]["step"] == 3

    second = Trainer(pairs, cfg, resume=tmp_path / "ckpt")
    assert second.step == 3
    events = list(second.run())
    assert [e.step for e in events if e.kind == "step"] == [4, 5, 6]
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(second.model.state_dict()[key], value, rtol=0, atol=0)
    assert [h["step"] for h in second.history] == [1, 2, 3, 4, 5, 6]


def test_pause_blocks_until_resumed(two_cells):
    trainer = Trainer([two_cells], tiny(steps=3))
    gen = trainer.run()
    assert next(gen).kind == "step"
    trainer.request_pause()
    assert next(gen).kind == "paused"
    timer = threading.Timer(0.3, trainer.request_resume)
    timer.start()
    event = next(gen)  # blocks until the timer resumes the run
    assert event.kind == "step" and event.step == 2 and not timer.is_alive()
    assert [e.kind for e in gen] == ["step", "done"]


def test_checkpoint_saved_on_exception(two_cells, tmp_path):
    trainer = Trainer([two_cells], tiny(steps=10, checkpoint_dir=tmp_path))
    original = trainer.train_step
    calls = []

    def failing(sampler):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return original(sampler)

    trainer.train_step = failing
    with pytest.raises(RuntimeError, match="boom"):
        list(trainer.run())
    model, meta = load_model(tmp_path / "last.safetensors")
    assert meta["training"]["step"] == 2
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_closing_the_generator_saves(two_cells, tmp_path):
    trainer = Trainer([two_cells], tiny(steps=10, checkpoint_dir=tmp_path))
    gen = trainer.run()
    next(gen)
    gen.close()
    assert read_metadata(tmp_path / "last.safetensors")["training"]["step"] == 1


def test_validation_best_checkpoint_and_time_budget(two_cells, tmp_path):
    # steps end the run, not the clock: under load a 3 s budget held no validation at all (the
    # budget itself is tested with a fake clock below)
    cfg = tiny(steps=3, time_limit=600.0, validate_every=1, val_fraction=0.3,
               checkpoint_dir=tmp_path)
    trainer = Trainer([two_cells], cfg)
    events = list(trainer.run())
    vals = [e for e in events if e.kind == "validation"]
    assert vals and set(vals[0].metrics) == {"loss", "iou", "pixel_error", "rand_error",
                                             "instance_f1"}
    assert events[-1].kind == "done" and 0 < trainer.elapsed
    assert (tmp_path / "best.safetensors").is_file() and (tmp_path / "last.safetensors").is_file()
    # the post-processing chosen on the validation band is stored with the final model
    stored = read_metadata(tmp_path / "last.safetensors")["postprocess"]
    assert stored["threshold"] in THRESHOLDS and "instance_f1" in stored["chosen_on"]
    assert PostprocessSettings.from_metadata({"postprocess": stored}).threshold == stored["threshold"]


def _fake_clock_run(monkeypatch, pairs, *, untrained: float = 1.0, **config):
    """Run a Trainer on a fake clock: a step takes 1 s, a validation 5 s (over every region;
    the early estimate's one region is scaled to all of them: 5 s too; before the first step
    the timings it reports are ``untrained`` times that, as an untrained network's noisy
    probabilities are slower to post-process), choosing the
    post-processing 45 s over every region (9 validations' predictions; the band's context
    and the scorings are counted in their own tests), less on a subset. Returns (event
    kinds, trainer, the regions the choice looked at, the seconds of each validation call);
    the trainer's elapsed time is checked to be the whole run's."""
    import napari_unet.core.training.schedule as schedule

    now, chosen, validations = [0.0], [], []
    real_step, real_validate = Trainer.train_step, schedule.validate
    real_choose = schedule.choose_postprocess
    everywhere = []

    def step(self, sampler):
        now[0] += 1.0
        return real_step(self, sampler)

    def validate(model, prepared, regions, **kwargs):
        timings = kwargs.pop("timings", None)
        if not everywhere:
            everywhere.append(len(split_validation(prepared, fraction=config["val_fraction"])))
        seconds = 5.0 * len(regions) / everywhere[0]
        now[0] += seconds
        validations.append(seconds)
        scores = real_validate(model, prepared, regions, **kwargs)
        if timings is not None:  # what the fake clock saw, all of it prediction
            slower = untrained if trainer.step == 0 else 1.0
            timings.update(predict_s=seconds * slower, score_s=0.0)
        return scores

    def choose(model, prepared, regions, **kwargs):
        chosen.append(len(regions))
        now[0] += 45.0 * len(regions) / everywhere[0]
        return real_choose(model, prepared, regions, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", step)
    monkeypatch.setattr(schedule, "validate", validate)
    monkeypatch.setattr(schedule, "choose_postprocess", choose)
    monkeypatch.setattr(schedule, "choice_cost", lambda *args, **kwargs: (9.0, 0.0))
    trainer = Trainer(pairs, tiny(steps=None, **config))
    trainer.clock = lambda: now[0]
    kinds = [e.kind for e in trainer.run()]
    assert trainer.elapsed == pytest.approx(now[0])  # what the model records: all of it
    return kinds, trainer, chosen, validations


def test_time_limit_is_wall_clock_with_validation(two_cells, monkeypatch):
    """time_limit 200 s counts the steps, the validations, the early estimate of a
    validation's time and the choice of the post-processing; no step or validation is
    started that would end past it."""
    kinds, trainer, chosen, validations = _fake_clock_run(
        monkeypatch, [two_cells], time_limit=200.0, validate_every=4, val_fraction=0.3)
    assert kinds[-1] == "done" and trainer.elapsed <= 200.0
    # the estimate (5 s), then 45 s (9 validations) stay reserved for the choice at the end:
    # 150 s for blocks of 4 steps + a validation (9 s): 16 blocks = 144 s, 6 more steps (a
    # validation would end past the reserve), then the choice over the whole band = 200 s
    assert validations == [5.0] * 17 and kinds.count("validation") == 16
    assert kinds.count("step") == 70 and chosen == [1]
    assert trainer.elapsed == pytest.approx(200.0) and trainer.postprocess is not None


def test_a_short_budget_holds_without_any_validation(two_cells, monkeypatch):
    """No validation is due before the end (validate_every 1000): the early estimate still
    keeps the choice within the budget. Before the first step it says 135 s for the whole
    choice (the untrained network: 3x the 45 s), more than CHOICE_SHARE (a quarter) of 60 s,
    so 15 s are kept; the final validation (5 s) does not fit beside them and is skipped.
    Timed again with the trained network, the choice takes 45 s over the 6 regions, so the
    14.3 s left hold 1 of them (with the first estimate, none would have fitted). Without any
    estimate the run took 60 + 5 + 45 = 110 s."""
    import napari_unet.core.training.schedule as schedule

    pairs = [two_cells] * 6
    kinds, trainer, chosen, validations = _fake_clock_run(
        monkeypatch, pairs, untrained=3.0, time_limit=60.0, validate_every=1000,
        val_fraction=0.3)
    assert kinds[-1] == "done" and trainer.elapsed <= 60.0
    assert schedule.CHOICE_SHARE == 0.25
    assert "validation" not in kinds and validations == [5.0 / 6] * 2
    assert chosen == [1] and trainer.postprocess is not None
    # every step that fitted beside the reserve ran: 60 - 5/6 - 15 = 44.2 s of steps
    assert kinds.count("step") == 44


def test_no_choice_when_not_one_region_fits(two_cells, monkeypatch):
    """A budget whose quarter holds not one region's choice: the model keeps the default
    post-processing and the run still ends within it."""
    kinds, trainer, chosen, _ = _fake_clock_run(
        monkeypatch, [two_cells], time_limit=40.0, validate_every=1000, val_fraction=0.3)
    assert kinds[-1] == "done" and trainer.elapsed <= 40.0
    assert chosen == [] and getattr(trainer, "postprocess", None) is None and kinds.count("step") == 25


def test_a_pause_keeps_the_timings(two_cells):
    """Pausing restarts the budget's clock but keeps the measured step and validation times
    that the reserve is made of (before, they were reset and a resumed run reserved
    nothing until its next validation)."""
    trainer = Trainer([two_cells], tiny(steps=None, time_limit=600.0, validate_every=2,
                                        val_fraction=0.3))
    gen = trainer.run()
    assert [next(gen).kind for _ in range(3)] == ["step", "step", "validation"]
    before = (trainer.budget.step_s, trainer.validation.seconds,
              dict(trainer.validation.timings))
    assert before[1] > 0 and before[2]
    trainer.request_pause()
    assert next(gen).kind == "paused"
    threading.Timer(0.05, trainer.request_resume).start()
    assert next(gen).kind == "step"
    assert trainer.validation.seconds == before[1]
    assert trainer.validation.timings == before[2]
    gen.close()


def test_fine_tune_from_saved_model(two_cells, tmp_path):
    net = torch.nn.Module()  # not a UNet: rejected by save_model
    with pytest.raises(TypeError):
        save_model(net, tmp_path / "x.safetensors")
    src = Trainer([two_cells], tiny(steps=1))
    list(src.run())
    path = src.save(tmp_path / "m.safetensors")
    tuned = Trainer([two_cells], tiny(steps=1, base_channels=8), init_model=path)
    assert tuned.model.base_channels == 4  # the file's architecture wins
    for key, value in src.model.state_dict().items():
        torch.testing.assert_close(tuned.model.state_dict()[key], value)


def test_loss_ignores_weight_zero_pixels():
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    target = torch.randint(0, 2, (1, 4, 4))
    weights = torch.rand(1, 4, 4) + 0.5
    weights[0, :2] = 0
    garbage = target.clone()
    garbage[0, :2] = 99  # out of range where weight is 0: must not matter
    loss = weighted_cross_entropy(logits, garbage, weights)
    ce = torch.nn.functional.cross_entropy(logits[:, :, 2:], target[:, 2:], reduction="none")
    expected = (ce * weights[:, 2:]).sum() / weights[:, 2:].sum()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.all(logits.grad[:, :, :2] == 0)
    # larger target/weights are centre-cropped to the output region
    big = torch.nn.functional.pad(weights, (1, 1, 1, 1))
    torch.testing.assert_close(
        weighted_cross_entropy(logits, torch.nn.functional.pad(garbage, (1, 1, 1, 1)), big), loss
    )
    assert float(weighted_cross_entropy(logits, target, torch.zeros(1, 4, 4)).detach()) == 0.0


def test_config_errors(two_cells):
    with pytest.raises(ValueError, match="preset"):
        TrainConfig(preset="fast")
    with pytest.raises(ValueError, match="budget"):
        TrainConfig(steps=None)
    with pytest.raises(ValueError, match="channel"):
        Trainer([(np.zeros((2, 32, 32)), np.zeros((32, 32), int))], tiny())
    assert config_for_device("cpu").base_channels == 16


def test_interrupt_inside_a_step_resumes_bit_identically(two_cells, tmp_path, monkeypatch):
    """A KeyboardInterrupt inside step 4 (a second Ctrl-C) leaves a checkpoint of the step
    boundary (RNG states drawn in the aborted step are not saved): resume == uninterrupted."""
    import napari_unet.core.training.batch as train_mod

    cfg = dict(steps=6, batch_size=2, augment=AugmentConfig())
    straight = Trainer([two_cells], tiny(**cfg, checkpoint_dir=tmp_path / "a"))
    list(straight.run())
    real = train_mod.augment_batch
    calls = [0]

    def augment_then_interrupt(*args, **kwargs):  # the RNGs have been drawn from by now
        out = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == 4:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(train_mod, "augment_batch", augment_then_interrupt)
    broken = Trainer([two_cells], tiny(**cfg, checkpoint_dir=tmp_path / "b"))
    with pytest.raises(KeyboardInterrupt):
        list(broken.run())
    monkeypatch.setattr(train_mod, "augment_batch", real)
    assert read_metadata(tmp_path / "b" / "last.safetensors")["training"]["step"] == 3
    resumed = Trainer([two_cells], tiny(**cfg, checkpoint_dir=tmp_path / "b"),
                      resume=tmp_path / "b")
    list(resumed.run())
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
