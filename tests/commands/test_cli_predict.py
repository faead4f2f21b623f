"""`napari-unet predict` on files, folders, stacks and zarr arrays; one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_unet.cli import main
from napari_unet.core.io import save_model
from napari_unet.core.model import UNet
from napari_unet.core.predict import labels_from_probabilities, predict_image


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=4).eval()
    return save_model(net, tmp_path_factory.mktemp("m") / "m.safetensors"), net


def _images(folder, n=2, shape=(50, 61)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = (rng.random(shape) * 255).astype(np.uint8)
        tifffile.imwrite(folder / f"img{i}.tif", img)
        out.append(img)
    return out


def test_folder_writes_labels_and_probabilities(tmp_path, model_file, capsys):
    path, net = model_file
    images = _images(tmp_path / "in")
    code = main(["predict", "--model", str(path), "--input", str(tmp_path / "in"),
                 "--output", str(tmp_path / "out"), "--probabilities", "--tile", "60",
                 "--device", "cpu"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    for i, img in enumerate(images):
        prob = tifffile.imread(tmp_path / "out" / f"img{i}_probabilities.tif")
        labels = tifffile.imread(tmp_path / "out" / f"img{i}_labels.tif")
        ref = predict_image(net, img, tile_shape=(60, 60))
        np.testing.assert_allclose(prob, ref, atol=1e-5)
        np.testing.assert_array_equal(labels, labels_from_probabilities(ref))
        assert labels.dtype == np.int32


def test_single_file_stack_and_tta(tmp_path, model_file):
    path, _ = model_file
    stack = (np.random.default_rng(1).random((5, 40, 44)) * 100).astype(np.float32)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    code = main(["predict", "--model", str(path), "--input", str(tmp_path / "stack.tif"),
                 "--output", str(tmp_path / "o"), "--tta", "--device", "cpu"])  # fmt: skip
    assert code == 0
    assert tifffile.imread(tmp_path / "o" / "stack_labels.tif").shape == (5, 40, 44)


def test_zarr_in_zarr_out(tmp_path, model_file):
    path, net = model_file
    image = np.random.default_rng(2).random((70, 90)).astype(np.float32)
    src = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=image.shape,
                          chunks=(32, 32), dtype="f4")  # fmt: skip
    src[:] = image
    code = main(["predict", "--model", str(path), "--input", str(tmp_path / "in.zarr"),
                 "--output", str(tmp_path / "out.zarr"), "--probabilities", "--block", "32",
                 "--tile", "60x60"])  # fmt: skip
    assert code == 0
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    np.testing.assert_allclose(
        group["probabilities"][:], predict_image(net, image, tile_shape=(60, 60)), atol=1e-4
    )
    assert group["labels"].shape == (70, 90)


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_one_line_errors(tmp_path, model_file, capsys):
    path, _ = model_file
    base = ["predict", "--model", str(path), "--output", str(tmp_path / "o")]
    (tmp_path / "empty").mkdir()
    assert "holds no" in _error(capsys, [*base, "--input", str(tmp_path / "empty")])
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    assert "cannot read" in _error(capsys, [*base, "--input", str(tmp_path / "bad.tif")])
    tifffile.imwrite(tmp_path / "rgb.tif", np.full((30, 30, 3), [0, 50, 100], np.uint8))
    # colour for a one-channel model is no error: it is turned gray by the model's rule
    assert main([*base, "--input", str(tmp_path / "rgb.tif")]) == 0
    assert (tmp_path / "o" / "rgb_labels.tif").is_file()
    capsys.readouterr()
    assert "does not exist" in _error(capsys, [*base, "--input", str(tmp_path / "nope.tif")])
    _images(tmp_path / "ok", n=1)
    assert "nearest valid" in _error(capsys, [*base, "--input", str(tmp_path / "ok"),
                                              "--tile", "45"])  # fmt: skip
    assert "--tile" in _error(capsys, [*base, "--input", str(tmp_path / "ok"), "--tile", "a"])
    assert "--halo: expected a positive" in _error(capsys, [*base, "--input", str(tmp_path / "ok"),
                                                            "--halo", "0"])
    (tmp_path / "notzarr.zarr").mkdir()
    assert "zarr array" in _error(capsys, [*base, "--input", str(tmp_path / "notzarr.zarr")])
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    bad_model = ["predict", "--model", str(tmp_path / "model.safetensors"),
                 "--input", str(tmp_path / "ok"), "--output", str(tmp_path / "o")]  # fmt: skip
    assert "error" in _error(capsys, bad_model)


def test_stored_postprocess_is_the_default_and_flags_override(tmp_path, capsys):
    """The model's metadata["postprocess"] (chosen at the end of training) is what predict uses."""
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=4).eval()
    _images(tmp_path / "in", n=1)
    img = tifffile.imread(tmp_path / "in" / "img0.tif")
    prob = predict_image(net, img, tile_shape=(60, 60))
    mid = float(np.median(prob[1]))  # half the pixels above: many cells at this threshold
    stored = {"threshold": mid, "min_size": 1, "regrow": 0, "watershed": False}
    path = save_model(net, tmp_path / "m.safetensors", postprocess=stored)

    def run(*flags):
        out = tmp_path / f"out{len(flags)}"
        flags = (*flags, "--force")  # run() predicts into the same folder more than once
        assert main(["predict", "--model", str(path), "--input", str(tmp_path / "in"),
                     "--output", str(out), "--tile", "60", "--device", "cpu", *flags]) == 0
        return tifffile.imread(out / "img0_labels.tif")

    np.testing.assert_array_equal(run(), labels_from_probabilities(prob, **stored))
    assert run().max() != labels_from_probabilities(prob).max()  # not the built-in 0.5
    assert run("--threshold", "1.0").max() == 0  # a flag overrides the stored value


def test_stored_tta_is_the_default_and_no_tta_switches_it_off(tmp_path, model_file, capsys):
    """A model whose training chose test-time augmentation on validation
    (``postprocess["tta"]``) is predicted with it unless ``--no-tta``; stderr says so."""
    _, net = model_file
    path = save_model(net, tmp_path / "tta.safetensors", postprocess={"tta": True})
    img = _images(tmp_path / "in", n=1)[0]
    probs = {}
    for name, flag in (("stored", ()), ("off", ("--no-tta",))):
        code = main(["predict", "--model", str(path), "--input", str(tmp_path / "in"),
                     "--output", str(tmp_path / name), "--probabilities", "--tile", "60",
                     "--device", "cpu", *flag])  # fmt: skip
        assert code == 0
        said = "test-time augmentation on, as stored with the model" in capsys.readouterr().err
        assert said == (name == "stored")
        probs[name] = tifffile.imread(tmp_path / name / "img0_probabilities.tif")
    np.testing.assert_allclose(probs["stored"], predict_image(net, img, tile_shape=(60, 60),
                                                              tta=True), atol=1e-5)
    np.testing.assert_allclose(probs["off"], predict_image(net, img, tile_shape=(60, 60)),
                               atol=1e-5)
    assert not np.allclose(probs["stored"], probs["off"], atol=1e-4)
