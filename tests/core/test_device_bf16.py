"""bfloat16 autocast on the CPU: detection, the switch, and a loss that matches float32."""

import numpy as np
import pytest
import torch

from napari_unet.core import device as device_mod
from napari_unet.core.device import cpu_supports_bf16, use_cpu_bf16
from napari_unet.core.synthetic import synthetic_cells
from napari_unet.core.training import TrainConfig, Trainer


def _trainer(mode):
    image, labels = synthetic_cells((64, 64), radius=8, seed=0)
    cfg = TrainConfig(steps=1, depth=2, base_channels=4, tile=None, validate_every=0,
                      val_fraction=0.0, device="cpu", seed=5, cpu_bf16=mode, dropout=0.0)
    return Trainer([(image, labels)], cfg)


def test_bf16_loss_matches_float32():
    fp32, bf16 = _trainer("off"), _trainer("on")
    assert not fp32.bf16 and bf16.bf16
    s32, s16 = fp32.make_sampler(), bf16.make_sampler()
    loss32, _ = fp32.train_step(s32)  # same seed: same weights, same batch before the update
    loss16, _ = bf16.train_step(s16)
    assert loss16 != loss32  # the autocast did run in bfloat16
    assert abs(loss16 - loss32) / loss32 < 0.02
    # master weights stay float32
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    assert bf16.metadata()["training"]["bf16"] is True


def test_switch_values():
    assert use_cpu_bf16("off", "cpu") is False
    assert use_cpu_bf16("on", "cpu") is True
    assert use_cpu_bf16("auto", "cpu") is cpu_supports_bf16()
    assert use_cpu_bf16("on", torch.device("meta")) is False  # not the CPU
    with pytest.raises(ValueError, match="cpu_bf16"):
        use_cpu_bf16("yes", "cpu")
    with pytest.raises(ValueError, match="cpu_bf16"):
        TrainConfig(cpu_bf16="fast")


def test_detection_says_no_without_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert cpu_supports_bf16() is False
    assert use_cpu_bf16("auto", "cpu") is False


def test_detection_falls_back_to_cpuinfo(monkeypatch):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    monkeypatch.setattr(device_mod, "_cpuinfo_flags", lambda: {"avx2"})
    assert cpu_supports_bf16() is False
    monkeypatch.setattr(device_mod, "_cpuinfo_flags", lambda: {"avx512_bf16"})
    expected = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert cpu_supports_bf16() is expected


def test_bf16_trains_finite():
    trainer = _trainer("on")
    losses = [e.loss for e in trainer.run() if e.kind == "step"]
    assert np.isfinite(losses).all()
