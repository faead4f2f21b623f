"""Tests that fail for a Trainer that quietly stops doing the paper's work: augmentation, the
border weights, drop-out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core.augment import AugmentConfig
from napari_unet.core.model import UNet
from napari_unet.core.predict import segment
from napari_unet.core.training import TrainConfig, Trainer, TrainingPair, prepare_pairs
from napari_unet.core.training import batch as train_module


def _touching_discs():
    yy, xx = np.mgrid[:64, :64]
    a = (yy - 32) ** 2 + (xx - 20) ** 2 < 13**2
    b = (yy - 32) ** 2 + (xx - 44) ** 2 < 13**2
    labels = np.zeros((64, 64), np.int32)
    labels[a], labels[b & ~a] = 1, 2
    rng = np.random.default_rng(0)
    image = (labels > 0) * 0.8 + rng.normal(0, 0.05, labels.shape)
    return image.astype(np.float32), labels


def _cfg(**changes):
    base = dict(steps=1, depth=1, base_channels=4, dropout=0.0, validate_every=0,
                val_fraction=0.0, device="cpu", seed=3, augment=AugmentConfig.none())
    base.update(changes)
    return TrainConfig(**base)


@pytest.mark.slow
def test_learns_with_the_default_augmentation():
    image, labels = _touching_discs()
    cfg = TrainConfig(steps=80, depth=2, base_channels=8, dropout=0.0, lr=5e-3, batch_size=2,
                      validate_every=0, val_fraction=0, device="cpu", seed=0)
    assert cfg.augment == AugmentConfig()  # the default augmentation, elastic included
    trainer = Trainer([(image, labels)], cfg)
    list(trainer.run())
    model, meta = trainer.snapshot()
    _prob, pred = segment(model, image, metadata=meta)
    assert int(pred.max()) == 2  # both cells, apart
    fg = (pred > 0) == (labels > 0)
    assert fg.mean() > 0.9


def test_the_network_sees_the_augmented_batch(monkeypatch):
    image, labels = _touching_discs()
    calls, seen = [], []

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(kwargs["config"])
        seen.append(out[0].clone())
        return out

    real = train_module.augment_batch
    monkeypatch.setattr(train_module, "augment_batch", spy)
    trainer = Trainer([(image, labels)], _cfg(augment=AugmentConfig()))
    inputs = []
    trainer.net.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach().clone()))
    list(trainer.run())
    assert calls == [AugmentConfig()]
    torch.testing.assert_close(inputs[0].float(), seen[0].float())


def test_border_weight_changes_the_loss_at_a_separation_gap():
    image, labels = _touching_discs()
    prep = {w0: prepare_pairs([TrainingPair(image, labels)], pad=2, w0=w0)[0] for w0 in (0.0, 10.0)}
    gap = (labels == 0) & (np.abs(np.arange(64) - 32)[None, :] < 3)
    gap[:20] = gap[45:] = False  # the gap between the two discs, not the outer background
    p = prep[0.0].pad
    w_gap = {w0: prep[w0].weights[p:-p, p:-p][gap].mean() for w0 in prep}
    assert w_gap[10.0] > w_gap[0.0] + 3
    losses = {}
    for w0 in (0.0, 10.0):
        trainer = Trainer([(image, labels)], _cfg(w0=w0, tile=60))
        losses[w0] = next(e.loss for e in trainer.run() if e.kind == "step")
    assert abs(losses[10.0] - losses[0.0]) > 1e-3 * abs(losses[0.0])


def test_dropout_is_active_in_training_and_off_in_eval():
    net = UNet(depth=1, base_channels=4, dropout=0.5)
    x = torch.rand(1, 1, 28, 28)
    net.train()
    assert not torch.equal(net(x), net(x))
    net.eval()
    torch.testing.assert_close(net(x), net(x))


@pytest.mark.parametrize("dropout", [0.5])
def test_the_trainer_steps_with_dropout_on_and_predicts_with_it_off(dropout):
    image, labels = _touching_discs()
    trainer = Trainer([(image, labels)], _cfg(dropout=dropout, steps=2))
    modes = []
    trainer.model.dropout.register_forward_hook(lambda m, _i, _o: modes.append(m.training))
    list(trainer.run())
    assert modes == [True, True]
    model, meta = trainer.snapshot()
    model.dropout.register_forward_hook(lambda m, _i, _o: modes.append(m.training))
    segment(model, image, metadata=meta)
    assert modes[2:] and not any(modes[2:])
