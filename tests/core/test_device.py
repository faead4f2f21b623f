"""Device choice and CPU threads."""

from __future__ import annotations

import pytest
import torch

from napari_unet.core.device import configure_cpu_threads, describe_devices, pick_device


def test_auto_and_cpu():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(None).type in ("cpu", "cuda", "mps")
    assert pick_device(torch.device("cpu")).type == "cpu"


def test_unknown_name():
    with pytest.raises(ValueError, match="device: expected one of"):
        pick_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="machine has CUDA")
def test_cuda_absent_is_clear():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        pick_device("cuda")


def test_auto_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto").type == "cuda"


def test_threads_and_description():
    before = torch.get_num_threads()
    try:
        assert configure_cpu_threads(1) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "cpu" in describe_devices()
