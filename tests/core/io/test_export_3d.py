"""Exports of a 3D model (anisotropic pooling): TorchScript, ONNX and bioimage.io with axes
b, c, z, y, x, each reproducing torch's probabilities on the test tensor."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from napari_unet.core.io import export_model, save_model
from napari_unet.core.io.tensors import make_test_input, normalized_test_input, reference_output
from napari_unet.core.model import UNet

META = {
    "normalization": {"method": "percentile", "low": 2.0, "high": 99.0},
    "class_names": ["background", "cell"],
}


@pytest.fixture(scope="module")
def net3d():
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=2, ndim=3, pool=((1, 2, 2), (2, 2, 2))).eval()
    with torch.no_grad():
        net.head.bias.copy_(torch.tensor([0.3, -0.2]))
    return net


def _inputs(net):
    raw = make_test_input(net)
    assert raw.shape == (1, 1, *net.valid_input_shape(1))
    other = np.random.default_rng(1).gamma(2.0, 10.0, size=(2, 1, *net.valid_input_shape(
        (30, 48, 52)))).astype(np.float32)  # fmt: skip
    return raw, other


def test_torchscript_and_onnx_of_a_3d_model_reproduce_torch(net3d, tmp_path):
    ts = torch.jit.load(str(export_model(net3d, tmp_path / "m.pt", format="torchscript")))
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(export_model(net3d, tmp_path / "m.onnx", format="onnx")),
                                providers=["CPUExecutionProvider"])  # fmt: skip
    shape = sess.get_inputs()[0].shape
    assert shape[2:] == ["z", "y", "x"]
    for raw in _inputs(net3d):
        ref = reference_output(net3d, raw, META)
        assert ref.shape == (raw.shape[0], 2, *net3d.output_shape(raw.shape[2:]))
        x = normalized_test_input(raw, META)
        with torch.no_grad():
            np.testing.assert_allclose(ts(torch.from_numpy(x)).numpy(), ref, atol=1e-5)
        np.testing.assert_allclose(sess.run(None, {"input": x})[0], ref, atol=1e-4)


def test_bioimageio_package_of_a_3d_model_validates_and_reproduces(net3d, tmp_path, offline,
                                                                  import_file):
    pytest.importorskip("bioimageio.spec")
    from bioimageio.spec import InvalidDescr, load_description

    model_file = save_model(net3d, tmp_path / "m3.safetensors", **META)
    out = export_model(model_file, tmp_path / "m3.zip", format="bioimageio", name="tiny 3D")
    descr = load_description(out, perform_io_checks=True)
    assert not isinstance(descr, InvalidDescr), descr.validation_summary.format()
    (inp,), (outp,) = descr.inputs, descr.outputs
    assert [str(a.id) for a in inp.axes] == ["batch", "channel", "z", "y", "x"]
    sizes = [(a.size.min, a.size.step) for a in inp.axes[2:]]
    assert sizes == [(26, 2), (44, 4), (44, 4)]  # z pooled once: its own step
    assert [a.size.offset for a in outp.axes[2:]] == [-24, -40, -40]
    scale = next(p for p in inp.preprocessing if p.id == "scale_range")
    assert [str(a) for a in scale.kwargs.axes] == ["z", "y", "x"]
    pkg = tmp_path / "unzipped"
    with zipfile.ZipFile(out) as z:
        z.extractall(pkg)
    raw, expected = np.load(pkg / "test_input.npy"), np.load(pkg / "test_output.npy")
    assert raw.ndim == 5
    np.testing.assert_allclose(expected, reference_output(net3d, raw, META), atol=1e-6)
    x = torch.from_numpy(normalized_test_input(raw, META))
    sd = descr.weights.pytorch_state_dict
    arch = import_file(pkg / sd.architecture.source.path, "arch3d")
    net = getattr(arch, sd.architecture.callable)(**sd.architecture.kwargs).eval()
    net.load_state_dict(torch.load(pkg / "weights.pt", weights_only=True))
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), expected, atol=1e-4)
        ts = torch.jit.load(str(pkg / "weights_torchscript.pt"))
        np.testing.assert_allclose(ts(x).numpy(), expected, atol=1e-4)
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(pkg / "weights.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], expected, atol=1e-4)
