"""Exports (TorchScript, ONNX, bioimage.io) reproduce napari-unet's own probabilities."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from napari_unet.core.io import export_model, save_model
from napari_unet.core.io.tensors import (
    export_onnx,
    export_torchscript,
    make_test_input,
    normalized_test_input,
    reference_output,
)
from napari_unet.core.model import UNet
from napari_unet.core.normalize import normalize

META = {
    "normalization": {"method": "percentile", "low": 2.0, "high": 99.0},
    "class_names": ["background", "cell"],
}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=4).eval()
    # non-trivial head bias so the two classes differ clearly
    with torch.no_grad():
        net.head.bias.copy_(torch.tensor([0.3, -0.2]))
    return net


def _inputs(net):
    """A raw test tensor and a second, larger one of another valid size with batch 2."""
    raw = make_test_input(net, min_shape=60)
    h, w = net.valid_input_shape((70, 90))
    rng = np.random.default_rng(1)
    other = rng.gamma(2.0, 10.0, size=(2, 1, h, w)).astype(np.float32)
    return raw, other


def test_test_input_and_reference(tiny):
    raw = make_test_input(tiny, min_shape=60)
    assert raw.dtype == np.float32 and raw.shape == (1, 1, 60, 60)
    x = normalized_test_input(raw, META)
    np.testing.assert_allclose(x[0, 0], normalize(raw[0, 0], low=2.0, high=99.0), rtol=1e-6)
    prob = reference_output(tiny, raw, META)
    assert prob.shape == (1, 2, *tiny.output_shape((60, 60)))
    np.testing.assert_allclose(prob.sum(1), 1.0, atol=1e-5)
    with torch.no_grad():
        logits = tiny(torch.from_numpy(x))
    np.testing.assert_allclose(prob, torch.softmax(logits, 1).numpy(), atol=1e-6)
    # an image is mirror-padded / cropped to a valid size
    odd = make_test_input(tiny, image=np.arange(50 * 70, dtype=np.float32).reshape(50, 70))
    assert odd.shape == (1, 1, *tiny.valid_input_shape((50, 70)))
    with pytest.raises(ValueError, match="input channel"):
        make_test_input(tiny, image=np.zeros((3, 50, 50)))


def test_torchscript_matches_own_prediction(tiny, tmp_path):
    path = export_torchscript(tiny, tmp_path / "m.pt")
    ts = torch.jit.load(str(path))
    for raw in _inputs(tiny):
        x = normalized_test_input(raw, META)
        with torch.no_grad():
            out = ts(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(out, reference_output(tiny, raw, META), atol=1e-4)


def test_onnx_matches_own_prediction(tiny, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = export_onnx(tiny, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    for raw in _inputs(tiny):
        x = normalized_test_input(raw, META)
        (out,) = sess.run(None, {"input": x})
        assert out.shape == (raw.shape[0], 2, *tiny.output_shape(raw.shape[-2:]))
        np.testing.assert_allclose(out, reference_output(tiny, raw, META), atol=1e-4)


def test_exports_match_tiled_prediction(tiny, tmp_path):
    """napari-unet's product path (overlap-tile prediction of the whole image) gives, inside the
    margin, what the exported TorchScript and ONNX models give on the test input."""
    ort = pytest.importorskip("onnxruntime")
    from napari_unet.core.predict import predict_tiled

    raw = make_test_input(tiny, min_shape=60)
    x = normalized_test_input(raw, META)
    m = tiny.margin
    own = predict_tiled(tiny, x[0], tile_shape=tiny.valid_input_shape((1, 1)))[:, m:-m, m:-m]
    ts = torch.jit.load(str(export_torchscript(tiny, tmp_path / "m.pt")))
    with torch.no_grad():
        np.testing.assert_allclose(ts(torch.from_numpy(x)).numpy()[0], own, atol=1e-4)
    sess = ort.InferenceSession(str(export_onnx(tiny, tmp_path / "m.onnx")),
                                providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": x})[0][0], own, atol=1e-4)


def test_same_padding_exports(tmp_path):
    net = UNet(depth=2, base_channels=4, padding="same").eval()
    raw = np.random.default_rng(0).random((1, 1, 32, 48), dtype=np.float32)
    ts = torch.jit.load(str(export_torchscript(net, tmp_path / "s.pt")))
    with torch.no_grad():
        out = ts(torch.from_numpy(normalized_test_input(raw, META))).numpy()
    assert out.shape == (1, 2, 32, 48)
    np.testing.assert_allclose(out, reference_output(net, raw, META), atol=1e-4)


def test_bioimageio_package_validates_offline_and_reproduces(tiny, tmp_path, offline,
                                                           import_file):
    pytest.importorskip("bioimageio.spec")
    from bioimageio.spec import InvalidDescr, load_description
    from bioimageio.spec.model.v0_5 import ModelDescr

    model_file = save_model(tiny, tmp_path / "tiny.safetensors", **META)
    out = export_model(model_file, tmp_path / "pkg" / "tiny.zip", format="bioimageio",
                       name="tiny test U-Net", authors=["A Tester"])
    descr = load_description(out, perform_io_checks=True)  # hashes, test tensors vs axes
    assert not isinstance(descr, InvalidDescr), descr.validation_summary.format()
    assert isinstance(descr, ModelDescr)
    assert descr.validation_summary.status in ("passed", "valid-format")
    assert [str(c.doi) for c in descr.cite] == ["10.1007/978-3-319-24574-4_28"]
    assert "1505.04597" in descr.cite[0].text
    (inp,), (outp,) = descr.inputs, descr.outputs
    assert [str(a.id) for a in inp.axes] == ["batch", "channel", "y", "x"]
    assert (inp.axes[2].size.min, inp.axes[2].size.step) == (tiny.valid_input_shape((1, 1))[0], 4)
    assert outp.axes[2].size.offset == -2 * tiny.margin
    scale = [p for p in inp.preprocessing if p.id == "scale_range"]
    assert len(scale) == 1
    kw = scale[0].kwargs
    assert (kw.min_percentile, kw.max_percentile) == (2.0, 99.0)
    assert [str(a) for a in kw.axes] == ["y", "x"]
    assert [str(c) for c in outp.axes[1].channel_names] == META["class_names"]
    assert descr.covers and descr.weights.torchscript and descr.weights.onnx

    # run every weight format of the package the way a bioimage.io consumer does
    pkg = tmp_path / "unzipped"
    with zipfile.ZipFile(out) as z:
        z.extractall(pkg)
    raw = np.load(pkg / "test_input.npy")
    expected = np.load(pkg / "test_output.npy")
    np.testing.assert_allclose(expected, reference_output(tiny, raw, META), atol=1e-6)
    x = torch.from_numpy(normalized_test_input(raw, META))
    sd = descr.weights.pytorch_state_dict
    arch = import_file(pkg / sd.architecture.source.path, "napari_unet_bioimageio_arch")
    net = getattr(arch, sd.architecture.callable)(**sd.architecture.kwargs).eval()
    net.load_state_dict(torch.load(pkg / "weights.pt", weights_only=True))
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), expected, atol=1e-4)
        ts = torch.jit.load(str(pkg / "weights_torchscript.pt"))
        np.testing.assert_allclose(ts(x).numpy(), expected, atol=1e-4)
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(pkg / "weights.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], expected, atol=1e-4)


def test_bioimageio_folder_and_errors(tiny, tmp_path, offline):
    pytest.importorskip("bioimageio.spec")
    from bioimageio.spec import InvalidDescr, load_description

    folder = export_model(tiny, tmp_path / "folder", format="bioimageio", metadata=META,
                          weight_formats=("pytorch_state_dict",))
    assert (folder / "rdf.yaml").is_file()
    descr = load_description(folder / "rdf.yaml", perform_io_checks=True)
    assert not isinstance(descr, InvalidDescr), descr.validation_summary.format()
    assert descr.weights.torchscript is None
    with pytest.raises(FileExistsError, match="not empty"):
        export_model(tiny, folder, format="bioimageio", metadata=META)
    with pytest.raises(ValueError, match="normalization"):
        export_model(tiny, tmp_path / "z.zip", format="bioimageio",
                     metadata={"normalization": {"method": "zscore"}})
    with pytest.raises(ValueError, match="format"):
        export_model(tiny, tmp_path / "m.x", format="keras")


def test_cli_export(tiny, tmp_path, capsys):
    from napari_unet.cli import main

    model_file = save_model(tiny, tmp_path / "tiny.safetensors", **META)
    assert main(["export", "--model", str(model_file), "--format", "onnx",
                 "--out", str(tmp_path / "t.onnx")]) == 0
    assert (tmp_path / "t.onnx").is_file()
    assert main(["export", "--model", str(model_file), "--format", "torchscript",
                 "--out", str(tmp_path / "t.onnx")]) == 2
    assert "expected a file ending in .pt" in capsys.readouterr().err
    assert main(["export", "--model", str(model_file), "--format", "onnx",
                 "--out", str(tmp_path / "t.onnx")]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["export", "--model", str(tmp_path / "missing.safetensors"), "--format", "onnx",
                 "--out", str(tmp_path / "u.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_build_rdf_leaves_the_callers_model_alone_and_carries_the_postprocess(tmp_path):
    from napari_unet.core.io.bioimageio import build_rdf

    net = UNet(depth=1, base_channels=2, dropout=0.2).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    meta = {**META, "postprocess": {"threshold": 0.35, "min_size": 4}}
    rdf = build_rdf(net, tmp_path, metadata=meta, weight_formats=("pytorch_state_dict",))
    assert net.training and all(m.training for m in net.modules())  # still in training mode
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])
    post = rdf["config"]["napari_unet"]["postprocess"]
    assert post["threshold"] == 0.35 and post["min_size"] == 4
