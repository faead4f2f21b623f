"""The Train widget's form and ``napari-unet train`` resolve the same settings: one declaration
of the settings, one planner (:func:`napari_unet.core.training.plan`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_unet.cli import build_parser
from napari_unet.commands.train import plan_run
from napari_unet.core.training import TrainingPair
from napari_unet.widgets.train import TrainWidget

BUDGETS = [(1500, 2), (20000, 15), (9000, 0), (500, 30)]  # (steps, minutes; 0: no limit)
IMAGES = [(64, 64), (300, 420), (1000, 700)]
VOLUME, SPACING = (24, 96, 96), (4.0, 1.0, 1.0)
RNG = np.random.default_rng(0)


def _cli(device, steps, minutes, shape, spacing=None):
    argv = ["train", "--images", "i", "--labels", "l", "--out", "m.safetensors",
            "--device", device, "--steps", str(steps)]
    argv += ["--time-limit", str(60.0 * minutes)] if minutes else []
    if spacing is not None:
        argv += ["--ndim", "3", "--spacing", *map(str, spacing)]
    pair = TrainingPair(np.zeros(shape, np.float32), np.zeros(shape, np.uint16),
                        ndim=len(shape), spacing=spacing)
    return plan_run(build_parser().parse_args(argv), [pair])


def _form(form, device, steps, minutes):
    form.controls["device"].setCurrentText(device)
    form.controls["steps"].setValue(steps)
    form.controls["time_limit"].setValue(minutes)
    return form.plan()


def _same(a, b):
    drop = ("checkpoint_dir",)  # where the files go: the CLI's --out, the form's run folder
    da = {k: v for k, v in dataclasses.asdict(a.config).items() if k not in drop}
    db = {k: v for k, v in dataclasses.asdict(b.config).items() if k not in drop}
    assert da == db
    assert a.tile_shape == b.tile_shape


def _fake_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (80 * 2**30, 80 * 2**30))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_form_and_the_command_line_plan_the_same_run(make_napari_viewer, monkeypatch,
                                                         device):
    viewer = make_napari_viewer()
    train = TrainWidget(viewer)
    if device == "cuda":
        _fake_gpu(monkeypatch)  # after the form listed the devices it really has
    seen = 0
    for shape in IMAGES:
        image = viewer.add_image(RNG.random(shape).astype(np.float32), name=f"i{shape}")
        labels = viewer.add_labels(np.zeros(shape, np.uint16), name=f"l{shape}")
        train.form.data.image_combo.set_layer(image)
        train.form.data.labels_combo.set_layer(labels)
        for steps, minutes in BUDGETS:
            _same(_cli(device, steps, minutes, shape), _form(train.form, device, steps, minutes))
            seen += 1
    image = viewer.add_image(RNG.random(VOLUME).astype(np.float32), name="vol",
                             scale=SPACING)
    labels = viewer.add_labels(np.zeros(VOLUME, np.uint16), name="vol labels", scale=SPACING)
    train.form.data.image_combo.set_layer(image)
    train.form.data.labels_combo.set_layer(labels)
    for steps, minutes in BUDGETS:
        _same(_cli(device, steps, minutes, VOLUME, SPACING),
              _form(train.form, device, steps, minutes))
        seen += 1
    assert seen == len(BUDGETS) * (len(IMAGES) + 1)


def test_the_form_shows_the_plan_and_keeps_what_the_user_set(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(RNG.random((300, 300)).astype(np.float32), name="cells")
    viewer.add_labels(np.zeros((300, 300), np.uint16), name="cells labels")
    train = TrainWidget(viewer)
    form = train.form
    form.controls["device"].setCurrentText("cpu")
    assert form.controls["tile"].value() == 156 and form.controls["depth"].value() == 3
    assert "tile 156: the CPU recipe" in form.reasons.text()
    form.controls["depth"].setValue(4)  # the user's depth: the recipe's tile no longer fits
    assert form.controls["tile"].value() == 0 and "depth" in form.chosen
    assert "covers the images" in form.reasons.text() and "depth 4" not in form.reasons.text()
    assert form.config().depth == 4
    form.controls["preset"].setCurrentText("paper")
    assert form.controls["depth"].value() == 4 and form.controls["dropout"].value() == 0.5
    assert not train.form.advanced.isExpanded()  # network and optimiser folded away
