"""A loaded model is checked before any use: weights that are not finite or not floats, an
output that overflows or ignores the input, and unusable metadata are refused as a broken file.
A fuzz test corrupts model files at random offsets: always a clean refusal or a working model."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_unet.core.io import load_model, save_model
from napari_unet.core.io.health import check_metadata, check_model
from napari_unet.core.model import UNet


def _net(**kw) -> UNet:
    torch.manual_seed(0)
    return UNet(depth=1, base_channels=4, **kw).eval()


@pytest.mark.parametrize(("change", "message"), [
    (lambda p: p.fill_(float("nan")), "are NaN or infinite"),
    (lambda p: p.fill_(float("-inf")), "are NaN or infinite"),
    (lambda p: p.mul_(1e30), "gives NaN or infinite output"),
    (lambda p: p.zero_(), "the same output for every pixel"),
])
def test_check_model_refuses_garbage(change, message):
    net = _net()
    with torch.no_grad():
        for p in net.parameters():
            change(p)
    with pytest.raises(ValueError, match=message) as err:
        check_model(net, source="m.safetensors")
    assert str(err.value).startswith("m.safetensors: ") and "the file is broken" in str(err.value)


def test_check_model_passes_a_model_and_keeps_its_mode():
    net = _net(ndim=3, norm="batch").train()
    check_model(net)
    assert net.training
    check_model(_net(num_classes=3, in_channels=3))


@pytest.mark.parametrize(("meta", "message"), [
    ({"normalization": "percentile"}, "not a mapping"),
    ({"normalization": {"low": "x"}}, "'low' is 'x', not a number"),
    ({"normalization": {"low": 50, "high": 10}}, "expected 0 <= low < high <= 100"),
    ({"normalization": {"method": "zscore"}}, "unknown method 'zscore'"),
    ({"normalization": {"invert": "yes"}}, "invert"),
    ({"class_names": "cells"}, "class_names"),
    ({"postprocess": {"threshold": 2}}, "threshold: expected a probability in [0, 1], got 2"),
    ({"postprocess": {"min_size": "big"}}, "post-processing is invalid"),
    ({"postprocess": {"scales": {"colour": [0, 1]}}},
     "metadata['postprocess']['scales']['colour']: expected one or more positive factors"),
    ({"postprocess": {"scales": {"color": [1]}}}, "expected the kinds 'gray' and 'colour'"),
    ({"training": [1]}, "the stored training entry"),
])
def test_check_metadata_refuses_what_would_fail_later(meta, message):
    with pytest.raises(ValueError, match=None) as err:
        check_metadata(meta, source="m.safetensors")
    assert message in str(err.value) and str(err.value).startswith("m.safetensors: ")


def test_integer_weights_are_refused_before_loading(tmp_path):
    from safetensors.torch import save_file

    path = save_model(_net(), tmp_path / "m.safetensors")
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        meta = json.loads(fh.read(n))["__metadata__"]
    state = {k: v.to(torch.int32) for k, v in _net().state_dict().items()}
    save_file(state, str(tmp_path / "int.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="holds I32 values where the network has floating"):
        load_model(tmp_path / "int.safetensors")


def test_export_refuses_a_broken_model_in_memory(tmp_path):
    from napari_unet.core.io import export_model

    net = _net()
    with torch.no_grad():
        net.head.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        export_model(net, tmp_path / "m.onnx", format="onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    path = save_model(_net(), tmp_path_factory.mktemp("fuzz") / "m.safetensors")
    return path.read_bytes()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_corrupted_model_files(tmp_path, model_bytes, data):
    """Bytes overwritten at random offsets (header and weights alike), or the file cut short:
    load_model either refuses with a ValueError naming the file, or gives a model whose
    output is finite probabilities. Never another exception, never NaN."""
    raw = bytearray(model_bytes)
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        for _ in range(data.draw(st.integers(1, 8), label="changes")):
            at = data.draw(st.integers(0, len(raw) - 1), label="offset")
            raw[at] = data.draw(st.integers(0, 255), label="byte")
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(bytes(raw))
    try:
        model, _meta = load_model(path)
    except ValueError as err:
        assert str(path) in str(err), err
        return
    x = torch.rand(1, model.in_channels, *model.valid_input_shape(8))
    with torch.no_grad():
        prob = torch.softmax(model(x), dim=1)
    assert torch.isfinite(prob).all()
    assert np.allclose(prob.sum(1).numpy(), 1.0, atol=1e-5)
