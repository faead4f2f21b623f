"""Safe loading: malicious pickles are refused without running, damaged files give clear errors,
and napari-unet's own format never unpickles."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from napari_unet.core.io import load_pretrained
from napari_unet.core.io import model_file as nio
from napari_unet.core.io.pretrained import infer_unet_config, read_state_dict, unet_from_state_dict
from napari_unet.core.model import UNet


class _Payload:
    """Unpickling this creates ``marker`` (via os.system in a shell, then os.open as fallback)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _WritePayload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("payload", [_Payload, _WritePayload])
@pytest.mark.parametrize("how", ["torch.save", "pickle", "state_dict_value"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload, how):
    marker = tmp_path / "PWNED"
    evil = payload(marker)
    path = tmp_path / "evil.pth"
    if how == "torch.save":
        torch.save(evil, path)
    elif how == "pickle":  # legacy (non-zip) pickle file
        with open(path, "wb") as fh:
            pickle.dump(evil, fh)
    else:  # hidden inside an otherwise ordinary checkpoint
        torch.save({"state_dict": UNet(depth=1, base_channels=2).state_dict(), "x": evil}, path)
    # the payload really is live: plain pickle would run it
    with pytest.raises(ValueError) as info:
        load_pretrained(path)
    msg = str(info.value)
    assert str(path) in msg and "refused" in msg and "state_dict()" in msg
    assert not marker.exists()
    with pytest.raises(ValueError, match="refused"):
        read_state_dict(path)
    assert not marker.exists()


def test_payload_is_live_for_an_unsafe_loader(tmp_path):
    """Guard for the test above: the same file *does* run code when unpickled unsafely."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save(_WritePayload(marker), path)
    torch.load(path, weights_only=False).close()
    assert marker.exists()


def test_whole_module_and_torchscript_are_refused(tmp_path):
    net = UNet(depth=1, base_channels=2)
    torch.save(net, tmp_path / "module.pt")
    with pytest.raises(ValueError, match=r"module\.pt.*refused.*UNet"):
        load_pretrained(tmp_path / "module.pt")
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "script.pt"))
    with pytest.raises(ValueError, match=r"script\.pt.*TorchScript"):
        load_pretrained(tmp_path / "script.pt")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "flipped"])
def test_damaged_files_give_clear_errors(tmp_path, suffix, damage):
    net = UNet(depth=1, base_channels=4)
    good = tmp_path / f"good{suffix}"
    if suffix == ".pt":
        torch.save(net.state_dict(), good)
    else:
        nio.save_model(net, good)
    data = good.read_bytes()
    bad = tmp_path / f"bad{suffix}"
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        bad.write_bytes(b"this is not a model file at all" * 3)
    elif damage == "empty":
        bad.write_bytes(b"")
    else:  # corrupt the header / zip directory
        bad.write_bytes(data[:8] + bytes(b ^ 0xFF for b in data[8:64]) + data[64:])
    with pytest.raises(ValueError) as info:
        load_pretrained(bad)
    assert str(bad) in str(info.value)
    assert "Traceback" not in str(info.value) and len(str(info.value)) < 600


def test_other_suffix_and_missing_file(tmp_path):
    path = tmp_path / "model.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"a": 1}, fh)
    with pytest.raises(ValueError, match=r"model\.pkl.*unsupported.*\.pt"):
        load_pretrained(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "nothing.pt")


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "ddp", "model_state_dict+config"])
def test_plain_checkpoints_load_with_inferred_shape(tmp_path, wrap):
    torch.manual_seed(0)
    net = UNet(in_channels=2, num_classes=3, depth=2, base_channels=4, padding="same")
    sd = net.state_dict()
    if wrap == "plain":
        obj = sd
    elif wrap == "state_dict":
        obj = {"state_dict": sd, "epoch": 3, "optimizer_name": "adam"}
    elif wrap == "ddp":
        obj = {f"module.{k}": v for k, v in sd.items()}
    else:
        obj = {"model_state_dict": sd, "config": dict(net.config)}
    torch.save(obj, tmp_path / "w.pth")
    padding = None if wrap == "model_state_dict+config" else "same"
    model, meta = load_pretrained(tmp_path / "w.pth", padding=padding)
    assert model.config == net.config
    assert meta["architecture"] == net.config and meta["source"].endswith("w.pth")
    assert _same_weights(model, net)


def test_infer_config_and_mismatch():
    for kw in [dict(depth=0, base_channels=3), dict(depth=3, base_channels=2, in_channels=4)]:
        net = UNet(**kw)
        cfg = infer_unet_config(net.state_dict())
        assert {k: net.config[k] for k in cfg} == cfg
    with pytest.raises(ValueError, match="another architecture"):
        infer_unet_config({"encoder.weight": torch.zeros(3, 3)})
    sd = UNet(depth=1, base_channels=2).state_dict()
    sd["head.bias"] = torch.zeros(5)
    with pytest.raises(ValueError, match="do not fit"):
        unet_from_state_dict(sd)


def test_bare_safetensors_and_own_format_with_override(tmp_path):
    from safetensors.torch import save_file

    net = UNet(depth=2, base_channels=4)
    save_file(net.state_dict(), str(tmp_path / "bare.safetensors"))
    model, meta = load_pretrained(tmp_path / "bare.safetensors")
    assert _same_weights(model, net) and meta["architecture"]["depth"] == 2
    nio.save_model(net, tmp_path / "own.safetensors", class_names=["bg", "fg"])
    model, meta = load_pretrained(tmp_path / "own.safetensors", dropout=0.0)
    assert model.config["dropout"] == 0.0 and meta["class_names"] == ["bg", "fg"]
    assert _same_weights(model, net)


def test_own_format_never_unpickles(tmp_path, monkeypatch):
    net = UNet(depth=2, base_channels=4)
    path = nio.save_model(net, tmp_path / "m.safetensors", class_names=["bg", "fg"])

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    class NoUnpickler:
        def __init__(self, *args, **kwargs):
            forbidden()

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)
    monkeypatch.setattr(torch, "load", forbidden)
    # guard: the patches are effective
    with pytest.raises(AssertionError, match="unpickling"):
        pickle.loads(pickle.dumps(1))
    model, meta = nio.load_model(path)
    assert _same_weights(model, net) and meta["class_names"] == ["bg", "fg"]
    model, meta = load_pretrained(path)
    assert _same_weights(model, net)


def test_the_architecture_check_does_not_import_torch_dynamo(tmp_path):
    """The meta-device shape check builds the network without its random init (which would go
    through torch's reference kernels and import torch._dynamo: seconds and tens of MB in
    napari's process at the end of every first GUI training)."""
    import subprocess
    import sys

    from napari_unet.core.io import save_model
    from napari_unet.core.model import UNet

    path = save_model(UNet(depth=2, base_channels=4), tmp_path / "m.safetensors")
    code = ("import sys; from napari_unet.core.io import load_model; "
            f"load_model({str(path)!r}); print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
