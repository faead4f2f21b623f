"""A model file is untrusted input: a random declared architecture is refused before anything
is allocated, or the model loads within a memory bound set by the file's size."""

from __future__ import annotations

import json
import resource

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import napari_unet.core.io.model_file as io_mod
from napari_unet.core.model import UNet, count_parameters

#: what one load may add to the process's peak memory
_BOUND = 256 * 2**20

architectures = st.fixed_dictionaries({
    "in_channels": st.integers(1, 4096),
    "num_classes": st.integers(1, 64),
    "depth": st.integers(0, 16),
    "base_channels": st.integers(1, 8192),
    "padding": st.sampled_from(["valid", "same"]),
    "dropout": st.floats(0, 0.9),
})
# the weights actually in the file: a small real U-Net (maybe the declared one)
small = st.fixed_dictionaries({
    "in_channels": st.integers(1, 3), "num_classes": st.integers(2, 3),
    "depth": st.integers(0, 2), "base_channels": st.integers(1, 6),
})


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(declared=architectures, real=small, honest=st.booleans())
def test_random_declared_architecture_is_refused_or_bounded(tmp_path, monkeypatch, declared,
                                                            real, honest):
    from safetensors.torch import save_file

    if honest:  # the file tells the truth about its weights
        declared = {**declared, **real}
    weights = UNet(**real).state_dict()
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path),
              metadata={"architecture": json.dumps(declared)})
    built = []
    real_unet = io_mod.UNet

    def spy(**arch):  # any network really built must be small: the check happened before
        if torch.get_default_device().type != "meta":
            n = count_parameters(**{k: arch[k] for k in (
                "in_channels", "num_classes", "depth", "base_channels")})
            # refuse here rather than let a broken check allocate gigabytes in the test
            assert 4 * n <= 2 * path.stat().st_size + 4096, f"would allocate {4 * n} bytes"
            built.append(n)
        return real_unet(**arch)

    monkeypatch.setattr(io_mod, "UNet", spy)
    before = _peak()
    try:
        model, _ = io_mod.load_model(path)
    except ValueError as err:
        assert str(path) in str(err)
        loaded = False
    else:
        loaded = True
        assert model.config == UNet(**declared).config if honest else True
    assert _peak() - before < _BOUND
    if honest:
        assert loaded, declared


def test_issue_crafted_file_is_refused_without_allocating(tmp_path):
    from safetensors.torch import save_file

    arch = {"in_channels": 1, "num_classes": 2, "depth": 12, "base_channels": 4096,
            "padding": "valid", "dropout": 0.5}
    path = tmp_path / "crafted.safetensors"
    save_file({"head.weight": torch.zeros(2, 4096, 1, 1)}, str(path),
              metadata={"architecture": json.dumps(arch)})
    before = _peak()
    with pytest.raises(ValueError, match="do not match the declared architecture"):
        io_mod.load_model(path)
    assert _peak() - before < _BOUND
