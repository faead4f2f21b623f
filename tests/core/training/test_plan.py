"""The training plan: one resolver of every default, called by the CLI, the form and the Trainer."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_unet.core.training import (
    FINE_TUNE_LR_FACTOR,
    DataSummary,
    gui_defaults,
    gui_defaults_3d,
    plan,
)

IMAGE = DataSummary(((256, 256),))


def test_the_cpu_recipe_and_its_reasons():
    p = plan({"steps": 1500, "time_limit": 120.0}, IMAGE, device="cpu")
    cfg = p.config
    assert (cfg.depth, cfg.base_channels, cfg.batch_size, cfg.dropout, cfg.tile, cfg.lr) == (
        3, 16, 2, 0.0, 156, 2e-3)
    assert p.tile_shape == (156, 156) and p.tile == 156
    assert p.reasons["tile"] == "156: the CPU recipe"
    assert "a run under 10 min" in p.reasons["lr"]
    assert "tile 156: the CPU recipe" in p.describe()


def test_chosen_values_win_and_have_no_reason():
    p = plan({"steps": 100, "depth": 4, "lr": 3e-3, "batch_size": 1}, IMAGE, device="cpu")
    assert (p.config.depth, p.config.lr, p.config.batch_size) == (4, 3e-3, 1)
    assert "depth" not in p.reasons and "lr" not in p.reasons
    # the recipe's tile suits its depth only: another depth gets the automatic tile
    assert p.config.tile is None and "covers the images" in p.reasons["tile"]


def test_a_long_cpu_run_halves_the_rate_and_validates_less_often():
    short = plan({"time_limit": 120.0}, device="cpu").config
    long = plan({"time_limit": 900.0}, device="cpu").config
    assert (short.lr, short.validate_every, short.steps) == (2e-3, 100, None)
    assert (long.lr, long.validate_every) == (1e-3, 1000)
    assert plan({}, device="cpu").config.steps == 1000  # no budget: 1000 steps


def test_the_paper_preset_and_the_volume_recipe():
    paper = plan({"steps": 10, "preset": "paper"}, IMAGE, device="cpu").config
    assert (paper.depth, paper.dropout, paper.batch_size, paper.tile, paper.lr) == (
        4, 0.5, 1, None, 1e-3)
    vol = plan({"steps": 10, "ndim": 3, "spacing": (4, 1, 1)},
               DataSummary(((20, 80, 80),)), device="cpu")
    assert (vol.config.depth, vol.config.base_channels, vol.config.norm,
            vol.config.pretrain_2d) == (3, 8, "batch", 0.25)
    assert vol.tile_shape[0] < vol.tile_shape[1]  # z pooled later: fewer z voxels of context
    assert gui_defaults_3d("cpu", spacing=(4, 1, 1)).spacing == (4.0, 1.0, 1.0)


def test_fine_tuning_lowers_the_base_rate_and_a_model_keeps_its_architecture():
    p = plan({"steps": 10}, IMAGE, device="cpu", fine_tuning=True,
             architecture={"in_channels": 1, "num_classes": 2, "depth": 2, "base_channels": 8})
    assert p.config.lr == pytest.approx(2e-3 * FINE_TUNE_LR_FACTOR)
    assert (p.config.depth, p.config.base_channels, p.config.tile) == (2, 8, None)
    assert "fine-tuning" in p.reasons["lr"]


def test_the_batch_rule_has_one_message():
    with pytest.raises(ValueError, match=r"^batch_size: the global batch must be a multiple of "
                                         r"the 2 processes .* got 3; use a batch of 4$"):
        plan({"steps": 10, "batch_size": 3}, device="cpu", processes=2)
    assert plan({"steps": 10}, device="cpu", processes=2).config.batch_size == 2


def test_the_memory_check_refuses_before_anything_is_allocated(monkeypatch):
    monkeypatch.setenv("NAPARI_UNET_MEMORY_LIMIT", "50M")
    with pytest.raises(ValueError, match=r"^memory: "):
        plan({"steps": 10, "base_channels": 64, "depth": 4}, DataSummary(((2000, 2000),)),
             device="cpu")
    plan({"steps": 10, "base_channels": 64}, DataSummary(((2000, 2000),)), device="cpu",
         check_memory=False)


def test_an_invalid_tile_names_the_valid_sizes():
    with pytest.raises(ValueError, match=r"tile: .* not a valid input"):
        plan({"steps": 10, "tile": 157}, IMAGE, device="cpu")


def test_unknown_settings_are_refused():
    with pytest.raises(TypeError, match="unknown setting"):
        plan({"stepz": 10})


def test_gui_defaults_are_the_plan_of_the_starting_budget():
    cfg = gui_defaults("cpu")
    assert (cfg.steps, cfg.time_limit, cfg.depth, cfg.tile, cfg.lr, cfg.validate_every) == (
        1500, 120.0, 3, 156, 2e-3, 100)


@settings(max_examples=40, deadline=None)
@given(steps=st.one_of(st.none(), st.integers(1, 20000)),
       minutes=st.one_of(st.none(), st.floats(0.5, 30)),
       depth=st.one_of(st.none(), st.integers(2, 4)),
       preset=st.sampled_from(["adamw", "paper"]),
       side=st.integers(40, 900), ndim=st.sampled_from([2, 3]))
def test_the_plan_of_a_plan_is_itself(steps, minutes, depth, preset, side, ndim):
    """The Trainer plans the config the CLI or the form planned: nothing changes."""
    choices = {"preset": preset, "ndim": ndim}
    if steps is not None or minutes is None:
        choices["steps"] = steps or 100
    if minutes is not None:
        choices["time_limit"] = 60 * minutes
    if depth is not None:
        choices["depth"] = depth
    shape = (max(side // 10, 8), side, side) if ndim == 3 else (side, side)
    data = DataSummary((shape,), spacing=(4.0, 1.0, 1.0) if ndim == 3 else None)
    first = plan(choices, data, device="cpu", check_memory=False)
    again = plan(first.config, data, device="cpu", check_memory=False)
    assert again.config == first.config and again.tile_shape == first.tile_shape


def test_the_trainer_trains_what_was_planned():
    import numpy as np

    from napari_unet.core.training import Trainer

    p = plan({"steps": 1, "validate_every": 0, "base_channels": 4}, DataSummary(((64, 64),)),
             device="cpu")
    trainer = Trainer([(np.random.default_rng(0).random((64, 64)), np.eye(64, dtype=int))], p.config)
    assert (trainer.lr, trainer.batch_size, trainer.tile_shape) == (
        p.config.lr, p.config.batch_size, p.tile_shape)
    # everything as planned; the kind of target is the labels' (recognised from them)
    assert dataclasses.asdict(trainer.config) == {**dataclasses.asdict(p.config),
                                                  "target": "objects"}
    assert trainer.device == torch.device("cpu")
