"""The CUDA paths: training with float16 autocast, its gradient scaler and channels-last
tensors, validation and prediction on the device, the model file read back on the CPU.

Marked ``cuda``: ``benchmarks/gpu_check.sh`` runs them (``pytest -m cuda``) on a GPU. They
run on the device ``NAPARI_UNET_TEST_DEVICE`` names (default ``cuda``, skipped where there is
none); the check's CPU dry run sets it to ``cpu``, so that their code runs everywhere and only
the assertions that concern CUDA alone wait for a GPU.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from napari_unet.core.io import load_model
from napari_unet.core.model import UNet
from napari_unet.core.predict import predict_tiled
from napari_unet.core.synthetic import synthetic_cells
from napari_unet.core.training import TrainConfig, Trainer

DEVICE = os.environ.get("NAPARI_UNET_TEST_DEVICE", "cuda")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                       reason="needs a CUDA device"),
]


def _on(module: torch.nn.Module) -> str:
    return next(module.parameters()).device.type


def test_training_on_the_device(tmp_path):
    image, labels = synthetic_cells((96, 96), radius=8, seed=0)
    config = TrainConfig(steps=4, depth=2, base_channels=8, tile=60, batch_size=2,
                         validate_every=2, val_fraction=0.25, device=DEVICE, seed=0)
    trainer = Trainer([(image, labels)], config)
    events = list(trainer.run())
    kinds = [e.kind for e in events]
    assert kinds[-1] == "done" and "validation" in kinds
    losses = [e.loss for e in events if e.kind == "step"]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert _on(trainer.model) == torch.device(DEVICE).type
    # weights stay float32 whatever autocast computes in
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    cuda = trainer.device.type == "cuda"
    # CUDA trains with float16 autocast, a gradient scaler and channels-last tensors
    assert (trainer.amp, trainer.scaler.is_enabled()) == (cuda, cuda)
    if cuda:
        assert trainer.channels_last and trainer.scaler.get_scale() > 0
    meta = trainer.metadata()
    assert meta["training"]["device"].startswith(trainer.device.type)
    model, _ = load_model(trainer.save(tmp_path / "m.safetensors"))  # a model file opens on the CPU, in float32
    assert _on(model) == "cpu" and all(p.dtype == torch.float32 for p in model.parameters())
    state = {k: v.cpu() for k, v in trainer.model.state_dict().items()}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("tta", [False, True])
def test_prediction_on_the_device_matches_the_cpu(tta):
    torch.manual_seed(0)
    model = UNet(depth=2, base_channels=8).eval()
    image, _ = synthetic_cells((100, 140), radius=8, seed=1)
    cpu = predict_tiled(model, image, device="cpu", tta=tta)
    dev = predict_tiled(model, image, device=DEVICE, tta=tta)
    assert _on(model) == torch.device(DEVICE).type
    assert dev.dtype == np.float32 and dev.shape == cpu.shape == (2, 100, 140)
    # float16 autocast on CUDA: probabilities within 1e-2 of the float32 CPU's
    assert float(np.abs(dev - cpu).max()) < 1e-2
    np.testing.assert_allclose(dev.sum(0), 1.0, atol=1e-3)
