"""Channels-last tensors for a 2D network trained in float32 and every 3D network on the CPU:
the layout is used, the loss and the update match the contiguous layout, and a resumed run keeps
it; ``cpu_channels_last`` turns it on or off."""

import pytest
import torch

from napari_unet.core.synthetic import synthetic_cells, synthetic_cells_3d
from napari_unet.core.training import TrainConfig, Trainer, TrainingPair


def _config(**changes):
    cfg = dict(steps=2, depth=2, base_channels=4, tile=None, validate_every=0, val_fraction=0.0,
               device="cpu", seed=3, cpu_bf16="off", dropout=0.0)
    return TrainConfig(**{**cfg, **changes})


def _pairs():
    image, labels = synthetic_cells((64, 64), radius=8, seed=0)
    return [(image, labels)]


def _is_channels_last(model) -> bool:
    convs = [p for p in model.parameters() if p.ndim == 4]
    return all(p.is_contiguous(memory_format=torch.channels_last) for p in convs) and any(
        not p.is_contiguous() for p in convs)


def _assert_same_step(fast, plain) -> None:
    """One step of each trainer: the same loss and the same updated weights."""
    loss_fast, _ = fast.train_step(fast.make_sampler())
    loss_plain, _ = plain.train_step(plain.make_sampler())
    assert abs(loss_fast - loss_plain) <= 1e-5 * abs(loss_plain)
    for (name, a), b in zip(fast.model.state_dict().items(), plain.model.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_float32_cpu_2d_trains_channels_last():
    trainer = Trainer(_pairs(), _config())
    assert trainer.channels_last and _is_channels_last(trainer.model)
    bf16 = Trainer(_pairs(), _config(cpu_bf16="on"))
    assert not bf16.channels_last and not _is_channels_last(bf16.model)
    off = Trainer(_pairs(), _config(cpu_channels_last="off"))
    assert not off.channels_last and not _is_channels_last(off.model)
    on = Trainer(_pairs(), _config(cpu_bf16="on", cpu_channels_last="on"))
    assert on.channels_last and _is_channels_last(on.model)


def _volume_trainer(**changes):
    vol, lab = synthetic_cells_3d((16, 28, 28), radius=5, seed=3)
    return Trainer([TrainingPair(vol, lab, ndim=3, spacing=(4.0, 1.0, 1.0))],
                   _config(ndim=3, spacing=(4.0, 1.0, 1.0), depth=1, base_channels=2,
                           tile=(14, 20, 20), norm="batch", **changes))


def _is_channels_last_3d(model) -> bool:
    convs = [p for p in model.parameters() if p.ndim == 5]
    return all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in convs) and any(
        not p.is_contiguous() for p in convs)


def test_3d_networks_train_channels_last_with_the_same_step():
    """A 3D network on the CPU is channels-last (NDHWC) with bfloat16 autocast and in float32
    (the volume recipe's step 1.30x, 1.32x in float32: benchmarks/bench_3d_step.py); its loss
    and update are those of the contiguous layout."""
    assert _volume_trainer(cpu_bf16="on").channels_last
    fast, plain = _volume_trainer(), _volume_trainer(cpu_channels_last="off")
    assert fast.channels_last and _is_channels_last_3d(fast.model)
    assert not plain.channels_last and not _is_channels_last_3d(plain.model)
    _assert_same_step(fast, plain)
    model, _ = fast.snapshot()  # what is saved and predicts: contiguous
    assert not _is_channels_last_3d(model)


def test_the_layout_by_device_and_network():
    from napari_unet.core.device import use_channels_last

    # CUDA: 2D under mixed precision; 3D stays contiguous (channels_last is rank 4 only)
    assert use_channels_last("auto", "cuda", ndim=2, bf16=False)
    assert not use_channels_last("auto", "cuda", ndim=3, bf16=False)
    assert not use_channels_last("on", "cpu", ndim=3, bf16=True, processes=2)
    with pytest.raises(ValueError, match="cpu_channels_last"):
        use_channels_last("yes", "cpu", ndim=2, bf16=False)


def test_channels_last_step_matches_contiguous():
    fast, plain = Trainer(_pairs(), _config()), Trainer(_pairs(), _config())
    plain.model.to(memory_format=torch.contiguous_format)
    plain.channels_last = False
    assert not _is_channels_last(plain.model)
    _assert_same_step(fast, plain)


def test_resumed_optimizer_state_takes_the_parameters_layout(tmp_path):
    cfg = _config(checkpoint_dir=tmp_path / "ckpt")
    list(Trainer(_pairs(), cfg).run())
    resumed = Trainer(_pairs(), _config(steps=3, checkpoint_dir=tmp_path / "ckpt"),
                      resume=tmp_path / "ckpt")
    assert resumed.step == 2 and _is_channels_last(resumed.model)
    for group in resumed.optimizer.param_groups:
        for p in group["params"]:
            for value in resumed.optimizer.state[p].values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    assert value.stride() == p.stride()


def test_loaded_2d_model_predicts_channels_last_with_the_same_probabilities(tmp_path):
    from napari_unet.core.io import load_model, save_model
    from napari_unet.core.model import UNet
    from napari_unet.core.predict import predict_image

    path = save_model(UNet(depth=2, base_channels=4), tmp_path / "m.safetensors")
    model, _ = load_model(path)
    assert _is_channels_last(model)
    image, _ = synthetic_cells((70, 90), radius=8, seed=1)
    fast = predict_image(model, image)
    model.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(torch.from_numpy(fast), torch.from_numpy(predict_image(model, image)),
                               rtol=1e-4, atol=1e-5)
    # a model loaded channels-last and fine-tuned with bfloat16 autocast trains contiguous
    loaded, _meta = load_model(path)
    tuned = Trainer(_pairs(), _config(cpu_bf16="on"), init_model=(loaded, _meta))
    assert not tuned.channels_last and not _is_channels_last(tuned.model)
