"""Model files: round trip, metadata, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core.io import load_model, read_metadata, save_model
from napari_unet.core.model import UNet


@pytest.fixture
def model():
    torch.manual_seed(0)
    return UNet(in_channels=2, num_classes=3, depth=1, base_channels=4, dropout=0.0)


def test_round_trip_weights_and_metadata(tmp_path, model):
    path = save_model(
        model,
        tmp_path / "sub" / "m.safetensors",
        normalization={"method": "percentile", "low": 2.0, "high": 99.0},
        training={"steps": 5},
        history=[{"step": 1, "loss": 0.5}],
        extra_key=[1, 2],
    )
    loaded, meta = load_model(path)
    assert not loaded.training
    assert meta["architecture"] == model.config
    assert meta["normalization"]["low"] == 2.0
    assert meta["class_names"] == ["background", "cell", "border"]
    assert meta["history"] == [{"step": 1, "loss": 0.5}]
    assert meta["extra_key"] == [1, 2]
    assert "napari_unet_version" in meta
    x = torch.randn(1, 2, 20, 20)
    model.eval()
    with torch.no_grad():
        # the weights come back bit for bit; the loaded model computes in the channels-last
        # layout (core.device.cpu_layout), which rounds differently in the last bits
        for key, value in model.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
        np.testing.assert_allclose(model(x).numpy(), loaded(x).numpy(), rtol=1e-5, atol=1e-5)
    assert read_metadata(path)["training"] == {"steps": 5}


def test_not_json_serialisable_metadata(tmp_path, model):
    with pytest.raises(TypeError, match="metadata 'bad'"):
        save_model(model, tmp_path / "m.safetensors", bad=object())


def test_pickle_file_is_rejected_without_unpickling(tmp_path, model):
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ValueError, match="safetensors"):
        load_model(path)


@pytest.mark.parametrize("content", [b"", b"abc", b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}"])
def test_garbage_is_rejected(tmp_path, content):
    path = tmp_path / "m.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=str(path.name)):
        load_model(path)


def test_truncated_file_is_rejected(tmp_path, model):
    path = save_model(model, tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated"):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.safetensors")


def test_file_without_architecture(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="architecture"):
        load_model(path)


def test_weights_not_matching_architecture(tmp_path, model):
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    state = {k: v for k, v in model.state_dict().items() if "head" not in k}
    import json

    save_file(state, str(path), metadata={"architecture": json.dumps(model.config)})
    with pytest.raises(ValueError, match="do not match"):
        load_model(path)
